// The admin listener (SPEC section 7): health and readiness, the connections API behind a
// Bearer token, and OAuth onboarding (start URL, vendor consent, callback). It runs on one
// event loop, so its own state (onboarding tickets) needs no lock.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>

#include "gateway/auth/token_cache.hpp"
#include "gateway/auth/token_store.hpp"
#include "gateway/notify/notifier.hpp"
#include "gateway/proxy/proxy.hpp"

namespace gw {

using AdminRequest = boost::beast::http::request<boost::beast::http::string_body>;
using AdminResponse = boost::beast::http::response<boost::beast::http::string_body>;

struct AdminContext {
  ProxyShared& shared;
  std::shared_ptr<TokenCache> cache;
  std::shared_ptr<TokenStore> store;    // asked for reachability by /readyz
  std::shared_ptr<StoreWriter> writer;  // every write, off the event loops
  // Health events (SPEC 6.10): connected and deleted come from here; may be empty.
  std::function<void(HealthEvent)> health;
  std::vector<boost::asio::io_context*> loops;  // every event loop, for /healthz
};

class AdminServer {
 public:
  AdminServer(boost::asio::io_context& ioc, AdminContext context,
              std::unique_ptr<boost::asio::ip::tcp::acceptor>& acceptor);
  void start();
  void stop();

 private:
  struct Ticket {
    std::string connection_id, integration;
    StringMap vars;
    std::string state;          // sent to vendors that echo it
    std::string binding;        // the browser cookie, for vendors that do not (Chime)
    std::string code_verifier;  // PKCE (RFC 7636), empty with pkce: none
    std::chrono::steady_clock::time_point expires;
    bool started = false, used = false;
    // Cookie-bound (state-less) vendors: the code a callback brought, kept until the person
    // confirms it on our page with `confirm` (a forced callback with an attacker's code
    // would otherwise connect the attacker's account).
    std::string pending_code, confirm;
  };

  AdminResponse confirm_page(const Ticket& t) const;
  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> serve(boost::asio::ip::tcp::socket socket);
  boost::asio::awaitable<AdminResponse> dispatch(const AdminRequest& req);
  boost::asio::awaitable<bool> loops_answer();
  boost::asio::awaitable<AdminResponse> connections_api(const AdminRequest& req,
                                                        const std::string& path);
  boost::asio::awaitable<AdminResponse> put_connection(const AdminRequest& req,
                                                       const std::string& id);
  boost::asio::awaitable<AdminResponse> delete_connection(const std::string& id);
  AdminResponse authorize(const AdminRequest& req, const std::string& id);
  AdminResponse oauth_start(const AdminRequest& req, const std::string& ticket);
  boost::asio::awaitable<AdminResponse> oauth_callback(const AdminRequest& req);
  // Applied by the runtime writer to the routes current when it commits.
  void add_connection(std::shared_ptr<Connection> conn);
  void remove_connection(const std::string& id);
  bool authorized(const AdminRequest& req) const;
  // A connected or deleted event for `c`, whose state before was `previous` ("none": new).
  void announce(const char* event, const Connection& c, std::string previous) const;

  boost::asio::io_context& ioc_;
  AdminContext ctx_;
  std::unique_ptr<boost::asio::ip::tcp::acceptor>& acceptor_;
  std::map<std::string, Ticket> tickets_;  // by ticket id
  static constexpr std::size_t kMaxAdminConnections = 64;
  std::size_t open_ = 0;  // admin connections being served (all on ioc_'s one thread)
};

// The JSON view of a connection for the admin API: never a secret.
nlohmann::json connection_json(const Connection& c);

}  // namespace gw
