// Keep-alive TLS connections to vendors, one pool per event-loop thread (so no locking):
// connect with a timeout, TLS 1.2+ with chain, host name (or IP SAN) verification and SNI,
// idle connections reused until `idle_timeout`, and swept every few seconds: one past its
// idle timeout or closed by the vendor is closed even when nobody asks for its host again.
// One made with a TLS context a reload replaced is never reused: it is closed when next
// taken, or by the sweep once past its idle timeout.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "gateway/auth/credential.hpp"
#include "gateway/config/config.hpp"
#include "gateway/proxy/tls_client.hpp"

namespace gw {

enum class UpstreamFailure { none, unreachable, tls, timeout, protocol, busy };
const char* failure_code(UpstreamFailure f);  // "upstream_unreachable", ...

struct UpstreamConnection {
  explicit UpstreamConnection(boost::asio::io_context& ioc, boost::asio::ssl::context& tls)
      : stream(ioc, tls.native_handle()) {}
  TlsClient stream;
  boost::beast::flat_buffer buffer;
  std::string key;
  std::chrono::steady_clock::time_point idle_since, idle_until;
  bool reused = false;
};

// Process-wide counters across all pools (exposed as metrics and used by tests).
struct UpstreamCounters {
  std::atomic<std::int64_t> idle{0}, busy{0};
  std::atomic<std::uint64_t> opened{0};
};

// Builds the client TLS context: system trust store plus `ca_file`, TLS 1.2 minimum.
std::shared_ptr<boost::asio::ssl::context> make_client_tls(const UpstreamConfig& config);

class UpstreamPool {
 public:
  // `share`: this pool's part of upstream.max_per_host is 1/share of it (one pool per loop).
  UpstreamPool(boost::asio::io_context& ioc, UpstreamCounters& counters, std::size_t share = 1);
  ~UpstreamPool();

  struct Acquired {
    std::unique_ptr<UpstreamConnection> connection;
    UpstreamFailure failure = UpstreamFailure::none;
    std::string detail;  // for logs: never a secret
  };
  // A live idle connection to `target` made with `tls` if one exists, else a new one. An idle
  // connection is probed (a non-blocking MSG_PEEK) first: one the vendor closed, or wrote to
  // while it was idle, is closed instead of used. With this pool's share of
  // upstream.max_per_host in use, waits up to connect_timeout for one (then `busy`).
  boost::asio::awaitable<Acquired> acquire(const UpstreamTarget& target,
                                           std::shared_ptr<boost::asio::ssl::context> tls,
                                           const UpstreamConfig& config, bool fresh = false);
  // Returns a connection whose last exchange completed with keep-alive.
  void release(std::unique_ptr<UpstreamConnection> c, const UpstreamConfig& config);
  // Drops a connection that must not be reused.
  void discard(std::unique_ptr<UpstreamConnection> c);
  void clear();
  // Closes idle connections past their idle timeout or closed by the vendor.
  void sweep();

 private:
  void schedule_sweep();
  // Takes a connection slot of `key` (false when its share is in use); gives one back and
  // wakes the longest waiter.
  bool take_slot(const std::string& key, std::size_t cap);
  void give_slot(const std::string& key);

  struct Waiter {
    std::shared_ptr<boost::asio::steady_timer> timer;
    bool woken = false;
  };
  boost::asio::io_context& ioc_;
  UpstreamCounters& counters_;
  std::size_t share_;
  boost::asio::steady_timer sweep_timer_;
  std::unordered_map<std::string, std::vector<std::unique_ptr<UpstreamConnection>>> idle_;
  std::unordered_map<std::string, std::size_t> busy_;  // connections in use, by host key
  std::unordered_map<std::string, std::deque<std::shared_ptr<Waiter>>> waiting_;
};

}  // namespace gw
