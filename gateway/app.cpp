#include "gateway/app.hpp"

#include <openssl/evp.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include <pthread.h>

#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <thread>

#include "gateway/admin/admin_server.hpp"
#include "gateway/auth/token_cache.hpp"
#include "gateway/config/watch.hpp"
#include "gateway/observability/log.hpp"
#include "gateway/observability/metrics.hpp"
#include "gateway/proxy/proxy.hpp"
#include "gateway/runtime_loader.hpp"

namespace gw {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

namespace {

class Gateway {
 public:
  explicit Gateway(std::filesystem::path file) : file_(std::move(file)) {}

  int run() {
    std::shared_ptr<const Runtime> rt;
    try {
      rt = load_runtime(file_);
    } catch (const ConfigError& e) {
      print_problems(e);
      return 2;
    }
    log::set_level(log::parse_level(rt->config.log.level));
    caller_cap_ = callers_that_fit();
    if (rt->config.limits.max_connections > caller_cap_)
      log::event(log::Level::warn, "limits.max_connections is more than the descriptors allow",
                 {{"max_connections", rt->config.limits.max_connections},
                  {"serving_at_most", caller_cap_},
                  {"hint", "raise the hard limit (ulimit -Hn, LimitNOFILE) to serve more"}});
    shared_.writer.commit([&](const std::shared_ptr<const Runtime>&) { return rt; });
    std::shared_ptr<TokenStore> store;
    try {
      store = make_store(rt->config.store, rt->config.refresh.timeout);
      auto routes = restore_connections(store->load(), rt->routes);
      if (routes != rt->routes)
        rt = shared_.writer.commit_routes([&](const Routes&) { return routes; });
    } catch (const StoreError& e) {
      log::event(log::Level::error, "cannot open the token store", {{"error", e.what()}});
      std::cerr << "gateway: " << e.what() << "\n";
      return 1;
    }
    TokenCacheParts parts;
    parts.context = [this](const Connection& c) {
      auto current = shared_.runtime.load();
      RefreshContext ctx;
      ctx.refresh = current->config.refresh;
      ctx.lock_lease = current->config.store.redis.lock_lease;
      ctx.redirect_uri = current->config.admin.public_url + "/oauth/callback";
      if (auto it = current->routes->integrations.find(c.integration);
          it != current->routes->integrations.end())
        ctx.overrides = it->second->config.overrides;
      return ctx;
    };
    parts.successor = [this](const std::string& id) -> std::shared_ptr<Connection> {
      auto current = shared_.runtime.load();
      auto it = current->routes->connections.find(id);
      return it == current->routes->connections.end() ? nullptr : it->second;
    };
    parts.endpoint =
        std::make_shared<HttpsTokenEndpoint>([this] { return shared_.runtime.load()->client_tls; });
    writer_ = std::make_shared<StoreWriter>(store);
    parts.writer = writer_;
    parts.lock = store->cluster_lock();
    notifier_ = make_notifier(store);
    parts.state_changed = [n = notifier_](const Connection& c, ConnectionState from,
                                          ConnectionState to, std::uint64_t version) {
      n->send(
          health_event_of(c, health_event(from, to), state_name(to), state_name(from), version));
    };
    auto cache = std::make_shared<TokenCache>(std::move(parts));
    shared_.tokens = cache;
    store_ = store;
    share_cooldowns(shared_, *store);

    unsigned threads =
        rt->config.threads ? rt->config.threads : std::thread::hardware_concurrency();
    if (threads == 0) threads = 1;
    for (unsigned i = 0; i < threads; ++i)
      workers_.push_back(std::make_unique<Worker>(shared_, threads));

    try {
      open_listeners(*rt);
    } catch (const std::exception& e) {
      log::event(log::Level::error, "cannot start", {{"error", e.what()}});
      std::cerr << "gateway: " << e.what() << "\n";
      return 1;
    }

    std::vector<asio::io_context*> loops;
    for (auto& w : workers_) loops.push_back(&w->ioc);
    admin_ = std::make_unique<AdminServer>(
        workers_[0]->ioc,
        AdminContext{shared_, cache, store, writer_,
                     [n = notifier_](HealthEvent e) { n->send(std::move(e)); }, loops},
        admin_acceptor_);
    admin_->start();
    asio::co_spawn(workers_[0]->ioc, accept_loop(), asio::detached);

    // Connections whose grant can obtain a token on its own get it now, not on first use.
    std::size_t next = 0;
    for (const auto& [id, conn] : rt->routes->connections) {
      auto cred = conn->current();
      if (conn->grant != "static" && conn->grant != "authorization_code" &&
          !usable(cred.get(), Clock::now()))
        cache->refresh_in_background(conn, RefreshTrigger::initial,
                                     workers_[next++ % workers_.size()]->ioc.get_executor());
    }

    auto signals = std::make_unique<asio::signal_set>(workers_[0]->ioc, SIGTERM, SIGINT, SIGHUP);
    wait_signal(*signals);

    // The first event loop runs on the main thread (the process keeps its name); loop N on a
    // thread named gw-loop-N (top -H, /proc/PID/task/*/comm), named before the start is told.
    std::vector<std::thread> pool;
    for (std::size_t i = 1; i < workers_.size(); ++i) {
      pool.emplace_back([w = workers_[i].get()] { w->ioc.run(); });
      pthread_setname_np(pool.back().native_handle(), ("gw-loop-" + std::to_string(i)).c_str());
    }

    log::event(log::Level::info, "gateway started",
               {{"version", GATEWAY_VERSION},
                {"listen", rt->config.listen.address + ":" + std::to_string(listen_port_)},
                {"admin", rt->config.admin.address + ":" + std::to_string(admin_port_)},
                {"threads", threads},
                {"integrations", rt->routes->integrations.size()},
                {"connections", rt->routes->connections.size()}});
    std::thread watcher([this] { watch_files(); });
    pthread_setname_np(watcher.native_handle(), "gw-watch");
    workers_[0]->ioc.run();
    for (auto& t : pool) t.join();
    {
      std::lock_guard lock(watch_mutex_);
      watch_stop_ = true;
    }
    watch_wake_.notify_all();
    watcher.join();
    writer_->stop();  // the last tries of pending records, while the loops still exist
    notifier_->stop();
    stop_sharing_cooldowns(*store_);
    // Removing the signal set restores the default actions; a late SIGTERM (a supervisor
    // repeating itself) must not turn a clean drained exit into death by signal.
    signals.reset();
    std::signal(SIGTERM, SIG_IGN);
    std::signal(SIGINT, SIG_IGN);
    std::signal(SIGHUP, SIG_IGN);
    log::info("gateway stopped");
    return 0;
  }

 private:
  // Health events go to the notify.url current at each event, trusted like the vendors.
  std::shared_ptr<Notifier> make_notifier(const std::shared_ptr<TokenStore>& store) {
    NotifierParts np;
    np.config = [this] { return shared_.runtime.load()->config.notify; };
    np.tls = [this] { return shared_.runtime.load()->client_tls; };
    if (store->cluster_lock())
      np.claim = [store](std::string id) { return store->claim_event(std::move(id)); };
    return std::make_shared<Notifier>(std::move(np));
  }

  void open_listeners(const Runtime& rt) {
    // One acceptor, on the first event loop, that hands each connection to the loop serving
    // the fewest (accept_loop). One acceptor per loop with SO_REUSEPORT would let the kernel
    // spread them by a hash of their addresses instead: 64 connections split as unevenly as
    // 38/26, and the busier loop's callers wait longer.
    acceptor_ = listen_on(rt.config.listen.address, rt.config.listen.port, "");
    listen_port_ = acceptor_->local_endpoint().port();
    admin_acceptor_ = listen_on(rt.config.admin.address, rt.config.admin.port, " (admin)");
    admin_port_ = admin_acceptor_->local_endpoint().port();
  }

  // A listening socket on the first event loop; `what` names it in the error.
  std::unique_ptr<tcp::acceptor> listen_on(const std::string& address, unsigned short port,
                                           const char* what) {
    tcp::endpoint ep(asio::ip::make_address(address), port);
    auto acceptor = std::make_unique<tcp::acceptor>(workers_[0]->ioc);
    acceptor->open(ep.protocol());
    acceptor->set_option(tcp::acceptor::reuse_address(true));
    boost::system::error_code ec;
    acceptor->bind(ep, ec);
    if (ec)
      throw std::runtime_error("cannot listen on " + address + ":" + std::to_string(port) + what +
                               ": " + ec.message());
    acceptor->listen(asio::socket_base::max_listen_connections);
    return acceptor;
  }

  // The event loop serving the fewest connections (the first of those, on a tie).
  Worker& least_loaded() {
    Worker* best = workers_[0].get();
    for (auto& w : workers_)
      if (w->open.load(std::memory_order_relaxed) < best->open.load(std::memory_order_relaxed))
        best = w.get();
    return *best;
  }

  // Waits until a connection can be taken, then takes those waiting (up to 64 before the
  // loop's other work gets its turn), each onto the loop serving the fewest at that moment.
  asio::awaitable<void> accept_loop() {
    boost::system::error_code ec;
    acceptor_->non_blocking(true, ec);
    for (;;) {
      auto [wec] = co_await acceptor_->async_wait(tcp::acceptor::wait_read, nothrow);
      if (wec || !acceptor_->is_open()) co_return;  // closed by drain()
      for (int taken = 0; taken < 64; ++taken) {
        Worker& worker = least_loaded();
        tcp::socket socket = acceptor_->accept(worker.ioc, ec);  // made on the loop to serve it
        if (ec == asio::error::would_block || ec == asio::error::try_again) break;
        if (ec == asio::error::connection_aborted) continue;  // the caller gave up first
        if (ec) {
          // Out of file descriptors or similar: pause instead of spinning.
          log::event(log::Level::warn, "accept failed", {{"error", ec.message()}});
          asio::steady_timer t(workers_[0]->ioc, std::chrono::milliseconds(50));
          co_await t.async_wait(nothrow);
          break;
        }
        auto rt = shared_.runtime.load();
        if (static_cast<std::size_t>(shared_.downstream_connections.load()) >=
            std::min(rt->config.limits.max_connections, caller_cap_)) {
          boost::system::error_code ignored;
          socket.close(ignored);  // refused cleanly; existing connections keep working
          continue;
        }
        // Counted now, not once the session starts, so that a burst taken in one go meets
        // max_connections; serve_downstream takes both back when the connection ends.
        ++shared_.downstream_connections;
        worker.open.fetch_add(1, std::memory_order_relaxed);
        asio::co_spawn(worker.ioc, serve_downstream(std::move(socket), worker), asio::detached);
      }
    }
  }

  void wait_signal(asio::signal_set& signals) {
    signals.async_wait([this, &signals](boost::system::error_code ec, int sig) {
      if (ec) return;
      if (sig == SIGHUP) {
        reload();
        wait_signal(signals);
      } else {
        drain();
      }
    });
  }

  void reload() {
    // What this reload reads, whether it succeeds or is refused: the watcher compares the
    // files with it, so a SIGHUP after an edit does not make it reload the same files again.
    struct Remember {
      Gateway& g;
      ~Remember() {
        auto digest = watched_digest(g.shared_.runtime.load()->config);
        std::lock_guard lock(g.watch_mutex_);
        g.watched_ = digest;
        g.last_loaded_ = std::move(digest);
      }
    } remember{*this};
    try {
      // Files are read and parsed outside the writer; tokens and run-time connections are
      // carried over from the runtime current when the reload commits.
      auto loaded = load_runtime(file_, shared_.runtime.load().get());
      auto rt = shared_.writer.commit([&](const std::shared_ptr<const Runtime>& current) {
        auto next = std::make_shared<Runtime>(*loaded);
        next->routes = carry_over(*current->routes, next->routes);
        return std::shared_ptr<const Runtime>(std::move(next));
      });
      log::set_level(log::parse_level(rt->config.log.level));
      metrics::config_reload(true);
      log::event(log::Level::info, "config reloaded",
                 {{"integrations", rt->routes->integrations.size()},
                  {"connections", rt->routes->connections.size()}});
    } catch (const ConfigError& e) {
      metrics::config_reload(false);
      log::event(log::Level::error, "config reload refused; the old config keeps serving",
                 {{"problems", e.problems()}});
    } catch (const std::exception& e) {
      metrics::config_reload(false);
      log::event(log::Level::error, "config reload refused; the old config keeps serving",
                 {{"problems", {e.what()}}});
    }
  }

  // Every 2 s, off the event loops: when what the running config was built from changed
  // (the config file, a ${file:} source, a policy folder, through a Kubernetes `..data`
  // symlink swap too), the first loop reloads exactly as on SIGHUP; a broken result is
  // refused there and the old config keeps serving, until the files change again.
  void watch_files() {
    auto first = watched_digest(shared_.runtime.load()->config);
    std::unique_lock lock(watch_mutex_);
    watched_ = std::move(first);
    while (!watch_wake_.wait_for(lock, std::chrono::seconds(2), [this] { return watch_stop_; })) {
      lock.unlock();
      auto now = watched_digest(shared_.runtime.load()->config);
      lock.lock();
      if (now != watched_) {
        watched_ = now;  // once per change, even if the reload is refused
        log::info("watched files changed: reloading");
        asio::post(workers_[0]->ioc, [this, now] {
          // A SIGHUP may have reloaded these very files meanwhile.
          std::string loaded;
          {
            std::lock_guard guard(watch_mutex_);
            loaded = last_loaded_;
          }
          if (loaded != now) reload();
        });
      }
    }
  }

  void drain() {
    if (shared_.draining.exchange(true)) return;
    log::info("draining: listeners closed, finishing in-flight requests");
    asio::post(workers_[0]->ioc, [a = acceptor_.get()] {
      boost::system::error_code ignored;
      a->close(ignored);
    });
    auto deadline = std::chrono::steady_clock::now() + shared_.runtime.load()->config.drain_timeout;
    asio::co_spawn(workers_[0]->ioc, finish_drain(deadline), asio::detached);
  }

  asio::awaitable<void> finish_drain(std::chrono::steady_clock::time_point deadline) {
    asio::steady_timer timer(workers_[0]->ioc);
    while (shared_.inflight.load() > 0 && std::chrono::steady_clock::now() < deadline) {
      timer.expires_after(std::chrono::milliseconds(20));
      co_await timer.async_wait(nothrow);
    }
    if (shared_.inflight.load() > 0)
      log::event(log::Level::warn, "drain timeout: abandoning in-flight requests",
                 {{"inflight", shared_.inflight.load()}});
    admin_->stop();
    for (auto& w : workers_) w->ioc.stop();
  }

  std::filesystem::path file_;
  std::mutex watch_mutex_;
  std::condition_variable watch_wake_;
  bool watch_stop_ = false;
  std::string watched_;      // the files' digest the watcher last acted on
  std::string last_loaded_;  // the files' digest the last reload read
  ProxyShared shared_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<tcp::acceptor> acceptor_;  // the proxy listener, on workers_[0]
  std::unique_ptr<tcp::acceptor> admin_acceptor_;
  std::unique_ptr<AdminServer> admin_;
  std::shared_ptr<TokenStore> store_;
  std::shared_ptr<StoreWriter> writer_;
  std::shared_ptr<Notifier> notifier_;
  unsigned short listen_port_ = 0, admin_port_ = 0;
  // How many callers the descriptor limit leaves room for (callers_that_fit).
  std::size_t caller_cap_ = std::numeric_limits<std::size_t>::max();
};

}  // namespace

int run_gateway(const std::filesystem::path& config_file) {
  Gateway gateway(config_file);
  return gateway.run();
}

}  // namespace gw
