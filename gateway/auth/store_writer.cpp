#include "gateway/auth/store_writer.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "gateway/observability/log.hpp"
#include "gateway/observability/metrics.hpp"

namespace gw {

namespace asio = boost::asio;
using SteadyClock = std::chrono::steady_clock;

struct StoreWriter::Impl : std::enable_shared_from_this<Impl> {
  // Completes one waiter, on the waiter's own executor.
  using Done = std::function<void(bool)>;

  struct Entry {
    std::optional<TokenRecord> record;  // to save
    bool removal = false;               // to remove (replaces a pending save)
    // Lease owners to release once nothing else is pending, and what to run when they are.
    std::vector<std::pair<std::string, std::function<void()>>> releases;
    std::vector<Done> waiters;         // of the record or removal
    std::vector<Done> settle_waiters;  // of settled()
    Millis backoff{0};
    SteadyClock::time_point due{};
    int failures = 0;
    bool has_write() const { return record || removal; }
  };

  Impl(std::shared_ptr<TokenStore> s, Retry r, std::shared_ptr<std::atomic<std::size_t>> p)
      : store(std::move(s)), lock(store->cluster_lock()), retry(r), pending(std::move(p)) {}

  asio::io_context ioc{1};
  asio::executor_work_guard<asio::io_context::executor_type> work{ioc.get_executor()};
  asio::steady_timer wake{ioc};
  std::shared_ptr<TokenStore> store;
  RefreshLock* lock;
  Retry retry;
  std::shared_ptr<std::atomic<std::size_t>> pending;
  std::map<std::string, Entry> entries;  // the writer thread's alone
  mutable std::mutex ids_mutex;
  std::set<std::string> pending_ids;  // a copy other threads may read
  bool stopping = false;
  std::thread thread;

  // pending(): the writes the store has refused at least once (one in its first try is not
  // yet a fault: /readyz must not flap with every save); pending(id): any write of `id`.
  void count() {
    std::set<std::string> ids;
    std::size_t refused = 0;
    for (const auto& [id, e] : entries)
      if (e.has_write()) {
        ids.insert(id);
        if (e.failures > 0) ++refused;
      }
    pending->store(refused);
    std::lock_guard guard(ids_mutex);
    pending_ids.swap(ids);
  }

  // Writer thread: try `id` now (a new record, a caller waiting on it).
  void soon(Entry& e) {
    e.due = SteadyClock::now();
    wake.cancel();
  }

  void submit(const std::string& id, std::optional<TokenRecord> record, bool removal, Done done) {
    auto& e = entries[id];
    if (removal) {
      e.record.reset();
      e.removal = true;
    } else if (record) {
      // A newer version replaces a pending one, never the reverse (an equal version is the
      // same token with a newer state: it replaces too).
      if (!e.record || e.record->version <= record->version) e.record = std::move(record);
      e.removal = false;
    }
    if (done) e.waiters.push_back(std::move(done));
    count();
    soon(e);
  }

  asio::awaitable<void> attempt(std::string id) {
    auto it = entries.find(id);
    if (it == entries.end()) co_return;
    Entry& e = it->second;
    bool ok = true;
    auto waiters = std::move(e.waiters);
    e.waiters.clear();
    if (e.record) {
      // Blocking, on this thread: nothing else touches the entries meanwhile.
      auto record = *e.record;
      ok = store->save(record);
      metrics::store_operation("save", ok);
      if (ok && e.record && e.record->version == record.version) e.record.reset();
    } else if (e.removal) {
      ok = store->remove(id);
      metrics::store_operation("remove", ok);
      if (ok) e.removal = false;
    }
    // The lease goes only after the record: a replica that took the lock earlier would read
    // the spent refresh token.
    if (!lock) e.releases.clear();
    if (ok && !e.has_write() && !e.releases.empty()) {
      auto owners = std::move(e.releases);
      e.releases.clear();
      decltype(owners) failed;
      for (auto& owner : owners) {
        if (co_await lock->release(id, owner.first)) {
          if (owner.second) owner.second();
        } else {
          failed.push_back(std::move(owner));
        }
      }
      metrics::store_operation("release", failed.empty());
      it = entries.find(id);  // the submissions of the await may have changed the entry
      if (it == entries.end()) co_return;
      for (auto& owner : failed) it->second.releases.push_back(std::move(owner));
      ok = failed.empty();
    }
    Entry& now = it->second;
    const bool saved = ok && !now.has_write();
    if (!now.has_write() && now.releases.empty()) {
      if (now.failures > 0)
        log::event(log::Level::info, "pending token record saved",
                   {{"connection", id}, {"attempts", now.failures + 1}});
      auto settled = std::move(now.settle_waiters);
      entries.erase(it);
      count();  // before anyone is told, so that pending() agrees with what they hear
      for (auto& w : settled) w(true);
      for (auto& w : waiters) w(saved);
      co_return;
    }
    const bool first = now.failures++ == 0;
    now.backoff = now.backoff.count() == 0 ? retry.first : std::min(retry.last, now.backoff * 2);
    now.due = SteadyClock::now() + now.backoff;
    count();
    if (first)
      log::event(log::Level::error,
                 now.has_write()
                     ? "token store write failed; the record stays pending and is retried"
                     : "lease release failed; retried until the store answers",
                 {{"connection", id}});
    for (auto& w : waiters) w(saved);
  }

  asio::awaitable<void> run() {
    while (!stopping) {
      auto now = SteadyClock::now();
      auto next = SteadyClock::time_point::max();
      std::vector<std::string> due;
      for (const auto& [id, e] : entries)
        if (e.due <= now)
          due.push_back(id);
        else
          next = std::min(next, e.due);
      for (const auto& id : due) co_await attempt(id);
      if (!due.empty()) continue;
      wake.expires_at(next);
      co_await wake.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  }

  // Writer thread, at the end: one more try of every write (none once the store has failed
  // one), every waiter answered, nothing left running.
  void finish() {
    stopping = true;
    bool store_answers = true;
    std::vector<std::string> lost;
    for (auto& [id, e] : entries) {
      if (store_answers && e.record) store_answers = store->save(*e.record);
      if (store_answers && e.removal) store_answers = store->remove(id);
      bool saved = store_answers;
      for (auto& w : e.waiters) w(saved);
      for (auto& w : e.settle_waiters) w(saved);
      if (!saved && e.has_write()) lost.push_back(id);
    }
    entries.clear();
    count();
    if (!lost.empty()) {
      nlohmann::json ids = lost;
      log::event(log::Level::error,
                 "stopping with token records the store never took; their newest tokens are lost",
                 {{"connections", ids}});
    }
    wake.cancel();
    work.reset();
  }
};

namespace {

// Runs `start(done)` and suspends until `done(bool)` is called, from any thread, or until
// `timeout` has passed (then false): the result is handed back on the awaiting coroutine's
// executor. The timer runs there too, since the writer's thread may be inside a slow save.
template <class Start>
asio::awaitable<bool> wait_for(Start start, Millis timeout) {
  return asio::async_initiate<decltype(asio::use_awaitable), void(bool)>(
      [start = std::move(start), timeout](auto handler) mutable {
        using Handler = decltype(handler);
        struct State {
          explicit State(Handler&& hh) : h(std::move(hh)) {}
          Handler h;
          std::atomic<bool> once{false};
          std::optional<asio::steady_timer> timer;
        };
        auto ex = asio::get_associated_executor(handler);
        auto state = std::make_shared<State>(std::move(handler));
        auto finish = [state, ex](bool ok) {
          if (state->once.exchange(true)) return;
          asio::post(ex, [state, ok]() mutable {
            if (state->timer) state->timer->cancel();
            state->h(ok);
          });
        };
        if (timeout != Millis::max()) {
          state->timer.emplace(ex, timeout);
          state->timer->async_wait([finish](boost::system::error_code ec) {
            if (!ec) finish(false);
          });
        }
        start(std::move(finish));
      },
      asio::use_awaitable);
}

}  // namespace

StoreWriter::StoreWriter(std::shared_ptr<TokenStore> store, Retry retry)
    : store_(store),
      pending_(std::make_shared<std::atomic<std::size_t>>(0)),
      impl_(std::make_shared<Impl>(std::move(store), retry, pending_)) {
  asio::co_spawn(impl_->ioc, impl_->run(), asio::detached);
  impl_->thread = std::thread([impl = impl_] { impl->ioc.run(); });
  pthread_setname_np(impl_->thread.native_handle(), "gw-store");
}

void StoreWriter::stop() {
  if (!impl_->thread.joinable()) return;
  asio::post(impl_->ioc, [impl = impl_] { impl->finish(); });
  impl_->thread.join();
}

StoreWriter::~StoreWriter() {
  stop();
}

asio::awaitable<bool> StoreWriter::save(TokenRecord record, Millis wait) {
  return wait_for(
      [impl = impl_, record = std::move(record)](Impl::Done done) mutable {
        auto id = record.id;
        asio::post(impl->ioc,
                   [impl, id, record = std::move(record), done = std::move(done)]() mutable {
                     impl->submit(id, std::move(record), false, std::move(done));
                   });
      },
      wait);
}

asio::awaitable<bool> StoreWriter::remove(std::string id, Millis wait) {
  return wait_for(
      [impl = impl_, id = std::move(id)](Impl::Done done) mutable {
        asio::post(impl->ioc, [impl, id, done = std::move(done)]() mutable {
          impl->submit(id, std::nullopt, true, std::move(done));
        });
      },
      wait);
}

void StoreWriter::save_detached(TokenRecord record) {
  asio::post(impl_->ioc, [impl = impl_, record = std::move(record)]() mutable {
    auto id = record.id;
    impl->submit(id, std::move(record), false, nullptr);
  });
}

void StoreWriter::release_later(std::string id, std::string owner, std::function<void()> released) {
  asio::post(impl_->ioc, [impl = impl_, id = std::move(id), owner = std::move(owner),
                          released = std::move(released)]() mutable {
    auto& e = impl->entries[id];
    e.releases.emplace_back(std::move(owner), std::move(released));
    impl->soon(e);
  });
}

asio::awaitable<bool> StoreWriter::settled(std::string id, Millis timeout) {
  if (!pending(id)) co_return true;
  // Built before it is awaited: GCC 12 destroys a temporary lambda's captures twice in a full
  // expression that also co_awaits.
  auto settling = wait_for(
      [impl = impl_, id = std::move(id)](Impl::Done done) {
        asio::post(impl->ioc, [impl, id, done = std::move(done)]() mutable {
          auto it = impl->entries.find(id);
          if (it == impl->entries.end() || !it->second.has_write()) return done(true);
          it->second.settle_waiters.push_back(std::move(done));
          impl->soon(it->second);  // first of all when the store is back
        });
      },
      timeout);
  co_return co_await std::move(settling);
}

bool StoreWriter::pending(const std::string& id) const {
  std::lock_guard guard(impl_->ids_mutex);
  return impl_->pending_ids.count(id) > 0;
}

}  // namespace gw
