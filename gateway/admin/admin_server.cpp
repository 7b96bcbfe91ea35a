// The admin listener: accepting and serving connections, the Bearer check, dispatch of
// requests, health, readiness and metrics, and publishing changed routes.
#include "gateway/admin/admin_server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <atomic>

#include "gateway/admin/admin_http.hpp"
#include "gateway/observability/metrics.hpp"

namespace gw {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using json = nlohmann::json;
constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);
using namespace admin_http;

AdminServer::AdminServer(asio::io_context& ioc, AdminContext context,
                         std::unique_ptr<tcp::acceptor>& acceptor)
    : ioc_(ioc), ctx_(std::move(context)), acceptor_(acceptor) {}

void AdminServer::start() {
  asio::co_spawn(ioc_, accept_loop(), asio::detached);
}

void AdminServer::stop() {
  boost::system::error_code ignored;
  acceptor_->close(ignored);
}

asio::awaitable<void> AdminServer::accept_loop() {
  for (;;) {
    auto [ec, socket] = co_await acceptor_->async_accept(nothrow);
    if (ec) {
      if (!acceptor_->is_open()) co_return;
      // Out of descriptors or similar: pause instead of spinning on the failing accept.
      asio::steady_timer pause(ioc_, std::chrono::milliseconds(50));
      co_await pause.async_wait(nothrow);
      continue;
    }
    // Probes, scrapes and operators need few connections; past the cap a new one is closed at
    // once, so the admin listener can never take the proxy's descriptors.
    if (open_ >= kMaxAdminConnections) {
      boost::system::error_code ignored;
      socket.close(ignored);
      continue;
    }
    ++open_;
    asio::co_spawn(ioc_, serve(std::move(socket)), [this](std::exception_ptr) { --open_; });
  }
}

asio::awaitable<void> AdminServer::serve(tcp::socket socket) {
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(1024 * 1024);
    stream.expires_after(std::chrono::seconds(30));
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, nothrow);
    if (ec) break;
    auto& req = parser.get();
    AdminResponse res;
    try {
      res = co_await dispatch(req);
    } catch (const nlohmann::json::exception&) {
      // A field of the wrong type ({"integration": 5}): a clear 400, never a dropped answer.
      res = error_response(http::status::bad_request, "bad_request",
                           "a JSON field has the wrong type");
    }
    res.keep_alive(req.keep_alive());
    res.prepare_payload();
    stream.expires_after(std::chrono::seconds(30));
    auto [wec, wn] = co_await http::async_write(stream, res, nothrow);
    if (wec || !req.keep_alive()) break;
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

bool AdminServer::authorized(const AdminRequest& req) const {
  const auto& token = ctx_.shared.runtime.load()->config.admin.token;
  auto header = req[http::field::authorization];
  std::string_view given(header.data(), header.size());
  if (given.substr(0, 7) != "Bearer ")
    given = {};
  else
    given.remove_prefix(7);
  // Compared even when absent, so a missing header takes as long as a wrong one.
  bool ok = equal_constant_time(given, token);
  return ok && !given.empty();
}

asio::awaitable<AdminResponse> AdminServer::dispatch(const AdminRequest& req) {
  std::string target(req.target());
  auto q = target.find('?');
  std::string path = target.substr(0, q);
  if (req.method() == http::verb::get && path == "/healthz") {
    if (co_await loops_answer()) co_return json_response(http::status::ok, {{"status", "ok"}});
    co_return json_response(
        http::status::service_unavailable,
        {{"status", "stuck"}, {"reasons", {"an event loop did not answer within 2s"}}});
  }
  if (req.method() == http::verb::get && path == "/readyz") {
    std::vector<std::string> reasons;
    if (ctx_.shared.draining.load()) reasons.push_back("shutting down");
    const auto pending = ctx_.writer->pending();
    if (auto* lock = ctx_.store->cluster_lock(); lock && pending == 0) {
      // A shared store is asked, not assumed; with records pending it is not ready anyway,
      // and the probe would queue behind their retries.
      bool reachable = true;
      co_await lock->read("readyz-probe", &reachable);
      if (!reachable) reasons.push_back("token store (redis) unreachable");
    } else if (!ctx_.store->reachable()) {
      reasons.push_back(lock ? "token store (redis) unreachable" : "token store unreachable");
    }
    if (auto n = pending)
      reasons.push_back(std::to_string(n) + (n == 1 ? " token record is" : " token records are") +
                        " pending: the token store has not taken " + (n == 1 ? "it" : "them") +
                        " yet");
    if (reasons.empty()) co_return json_response(http::status::ok, {{"status", "ready"}});
    co_return json_response(http::status::service_unavailable,
                            {{"status", "not ready"}, {"reasons", reasons}});
  }
  if (req.method() == http::verb::get && path == "/metrics") {
    metrics::Snapshot snap;
    snap.inflight = static_cast<double>(ctx_.shared.inflight.load());
    snap.downstream_connections = static_cast<double>(ctx_.shared.downstream_connections.load());
    snap.upstream_idle = static_cast<double>(ctx_.shared.upstream.idle.load());
    snap.upstream_busy = static_cast<double>(ctx_.shared.upstream.busy.load());
    snap.store_pending = static_cast<double>(ctx_.writer->pending());
    std::map<std::pair<std::string, std::string>, double> states;
    for (const auto& [id, c] : ctx_.shared.runtime.load()->routes->connections) {
      std::lock_guard lock(c->lifecycle->mutex);
      auto state = c->lifecycle->refreshing ? "refreshing" : state_name(c->lifecycle->state);
      states[{c->integration, state}] += 1;
    }
    for (const auto& [key, n] : states) snap.connections.emplace_back(key.first, key.second, n);
    AdminResponse res{http::status::ok, 11};
    res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
    res.body() = metrics::render(snap);
    co_return res;
  }
  if (path.rfind("/admin/", 0) == 0) {
    if (ctx_.shared.runtime.load()->config.admin.token.empty())
      co_return error_response(http::status::forbidden, "forbidden",
                               "the admin API is disabled: admin.token is not set");
    if (!authorized(req)) {
      auto res = error_response(http::status::unauthorized, "unauthorized",
                                "a valid admin Bearer token is required");
      res.set(http::field::www_authenticate, "Bearer");
      co_return res;
    }
    co_return co_await connections_api(req, path);
  }
  if (req.method() == http::verb::get && path.rfind("/oauth/start/", 0) == 0)
    co_return oauth_start(req, path.substr(13));
  if ((req.method() == http::verb::get || req.method() == http::verb::post) &&
      path == "/oauth/callback")
    co_return co_await oauth_callback(req);
  co_return error_response(http::status::not_found, "not_found", "no admin endpoint " + path);
}

asio::awaitable<bool> AdminServer::loops_answer() {
  // Each event loop must run a posted no-op; a loop stuck in a long computation or a
  // deadlock fails the liveness probe.
  struct Round {
    std::atomic<std::size_t> left;
  };
  auto round = std::make_shared<Round>();
  round->left = ctx_.loops.size();
  auto timer = std::make_shared<asio::steady_timer>(ioc_, std::chrono::seconds(2));
  for (auto* loop : ctx_.loops)
    asio::post(*loop, [round, timer, this] {
      if (--round->left == 0) asio::post(ioc_, [timer] { timer->cancel(); });
    });
  co_await timer->async_wait(nothrow);
  co_return round->left.load() == 0;
}

void AdminServer::add_connection(std::shared_ptr<Connection> conn) {
  ctx_.shared.writer.commit_routes(
      [&](const Routes& current) { return with_connection(current, conn); });
}

void AdminServer::remove_connection(const std::string& id) {
  ctx_.shared.writer.commit_routes(
      [&](const Routes& current) { return without_connection(current, id); });
}

}  // namespace gw
