// What the proxy's event loops share: the current runtime snapshot (config, routes, TLS
// context), the token provider and process-wide counters; and the per-thread Worker.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "gateway/auth/token_provider.hpp"
#include "gateway/auth/token_store.hpp"
#include "gateway/config/config.hpp"
#include "gateway/proxy/routes.hpp"
#include "gateway/proxy/upstream_pool.hpp"
#include "gateway/snapshot.hpp"

namespace gw {

// Everything a request needs that a reload may replace, swapped as one immutable unit:
// a request keeps the snapshot it started with until it ends.
struct Runtime {
  Config config;
  std::shared_ptr<const Routes> routes;
  std::shared_ptr<boost::asio::ssl::context> client_tls;
  std::shared_ptr<boost::asio::ssl::context> server_tls;  // null: plain HTTP listener
  // SHA-256 over the names and contents of the files each context was built from: a
  // reload that leaves them unchanged keeps the same context (and the pooled connections
  // made with it) instead of building, and holding, another.
  std::string client_tls_digest, server_tls_digest;
};

// The one writer of the runtime: start, reload and admin edits each hand it a change, a
// function of the runtime current when the change commits, applied under one mutex and
// published whole. Readers (every request, on every event loop) load() the snapshot without
// waiting for a writer. A change computed from a runtime loaded before a co_await would undo
// whatever committed meanwhile (a reload landing during a slow revoke); a change applied here
// cannot. Never co_await inside a change.
class RuntimeWriter {
 public:
  explicit RuntimeWriter(Snapshot<Runtime>& runtime) : runtime_(runtime) {}
  using Change =
      std::function<std::shared_ptr<const Runtime>(const std::shared_ptr<const Runtime>& current)>;
  std::shared_ptr<const Runtime> commit(const Change& change);
  // A change of the routes only (admin edits, onboarding).
  std::shared_ptr<const Runtime> commit_routes(
      const std::function<std::shared_ptr<const Routes>(const Routes& current)>& change);

 private:
  Snapshot<Runtime>& runtime_;
  std::mutex mutex_;
};

struct ProxyShared {
  Snapshot<Runtime> runtime;
  RuntimeWriter writer{runtime};
  std::shared_ptr<TokenProvider> tokens;
  UpstreamCounters upstream;
  std::atomic<bool> draining{false};
  std::atomic<std::int64_t> downstream_connections{0};
  std::atomic<std::int64_t> inflight{0};
  // Hands a vendor's cool-down to the other replicas (set with the redis store, else empty).
  std::function<boost::asio::awaitable<void>(std::string id, std::int64_t until_ms)>
      publish_cooldown;
};

// Vendor cool-downs (SPEC 5.1) through the store: those this process learns are published
// (publish_cooldown), those other replicas publish land on the connection. Call once the
// runtime is set; stop_sharing_cooldowns before the runtime goes.
void share_cooldowns(ProxyShared& shared, TokenStore& store);
void stop_sharing_cooldowns(TokenStore& store);
// Moves a connection's cool-down end later (never earlier); true when it moved.
bool raise_cooldown(Lifecycle& lifecycle, std::int64_t until_ms);

// One event loop thread: its io_context, its upstream pool, the connections it serves.
struct Worker {
  // `loops`: how many Workers share upstream.max_per_host.
  Worker(ProxyShared& s, std::size_t loops) : ioc(1), pool(ioc, s.upstream, loops), shared(s) {}
  boost::asio::io_context ioc;
  UpstreamPool pool;
  ProxyShared& shared;
  // Downstream connections this loop serves: counted up by the accept loop as it hands one
  // over, down when serve_downstream ends.
  std::atomic<std::int64_t> open{0};
  // Relay buffers no request holds (this loop's only): a session takes one for a request
  // and gives it back after, so thousands of idle keep-alive callers hold none and the
  // busy few reuse the same warm memory.
  std::vector<std::unique_ptr<char[]>> spare_buffers;
};

// Serves one downstream connection until it closes (plain or TLS per the runtime), then
// counts it out of shared.downstream_connections and worker.open, where its acceptor
// counted it in.
boost::asio::awaitable<void> serve_downstream(boost::asio::ip::tcp::socket socket, Worker& worker);

}  // namespace gw
