// One refresh of one connection, in the phases of SPEC 6: choose the grant, take the cluster
// lease (or adopt another replica's token), request the token, publish it (durable first),
// settle the lifecycle and wake the waiters, report.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include <random>

#include "gateway/auth/crypto.hpp"
#include "gateway/auth/token_cache.hpp"
#include "gateway/observability/log.hpp"
#include "gateway/observability/metrics.hpp"

namespace gw {

namespace asio = boost::asio;
constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

namespace {

const char* trigger_name(RefreshTrigger t) {
  switch (t) {
    case RefreshTrigger::ahead:
      return "ahead";
    case RefreshTrigger::rejected:
      return "rejected";
    case RefreshTrigger::forced:
      return "forced";
    case RefreshTrigger::initial:
      return "initial";
  }
  return "ahead";
}

}  // namespace

Millis jittered(Millis d) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_real_distribution<double> f(0.5, 1.0);  // "equal jitter"
  return Millis(static_cast<Millis::rep>(static_cast<double>(d.count()) * f(rng)));
}

Millis next_backoff(Millis current, const BackoffConfig& config) {
  return current.count() == 0 ? config.initial : std::min(config.max, current * 2);
}

// What one refresh carries from phase to phase.
struct TokenCache::Run {
  std::shared_ptr<Connection> c;
  RefreshTrigger trigger;
  RefreshContext ctx;
  std::shared_ptr<const Credential> old;
  const OAuthSpec* oauth = nullptr;
  std::string grant, refresh_token;
  std::uint64_t base_version = 0;
  TokenResult result;
  bool skip = false;                   // no request to make (store unreachable, lock held)
  std::optional<TokenRecord> adopted;  // another replica's newer record
  std::string owner;                   // our lease, when we hold one
  std::shared_ptr<std::atomic<bool>> renewing = std::make_shared<std::atomic<bool>>(false);
  bool saved = false;  // the store took the new record
  std::shared_ptr<const Credential> fresh;
  Clock::time_point now{};
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
};

// Grant: a refresh token when there is one and the policy refreshes, else the connection's
// own grant when it can log in again by itself (client_credentials, password).
void TokenCache::choose_grant(Run& run) const {
  const auto& c = *run.c;
  run.refresh_token = run.old ? run.old->refresh_token : "";
  if (run.refresh_token.empty())
    if (auto it = c.credentials.find("refresh_token"); it != c.credentials.end())
      run.refresh_token = it->second;
  if (!run.refresh_token.empty() && run.oauth && run.oauth->grants.count("refresh_token"))
    run.grant = "refresh_token";
  else if (c.grant == "client_credentials" || c.grant == "password")
    run.grant = c.grant;
}

namespace {

// How long a refresh waits for the store to take its new record before it goes on with the
// token in memory (the record stays pending, SPEC 6.9).
constexpr Millis kSaveWait{1000};

void waiting_on(Connection& c, const char* what) {
  std::lock_guard lock(c.lifecycle->mutex);
  c.lifecycle->waiting_on = what;
}

}  // namespace

// Pending record (SPEC 6.9): a record of this connection the store has not taken yet is
// saved first of all; with the redis store no refresh starts before it is, or another
// replica would read the spent refresh token.
asio::awaitable<void> TokenCache::wait_for_pending(Run& run) {
  auto& writer = *parts_.writer;
  if (!writer.pending(run.c->id)) co_return;
  waiting_on(*run.c, "the token store, which has not taken this connection's newest record");
  if (co_await writer.settled(run.c->id, run.ctx.refresh.timeout) || !parts_.lock) co_return;
  run.result.failure = TokenFailure::transient;
  run.result.error = "token store unreachable; the newest record is pending";
  run.skip = true;
}

// Lease (redis store): hold the cluster lock for the refresh, renewed while it runs; whoever
// loses waits for the winner's record instead of refreshing. `run` lives in run_refresh's
// frame, which awaits this.
asio::awaitable<void> TokenCache::take_lease(Run& run) {
  auto* lock = parts_.lock;
  const auto& cfg = run.ctx.refresh;
  const auto& id = run.c->id;
  run.owner = crypto::base64(crypto::random_bytes(12));
  const Millis lease = run.ctx.lock_lease.count() ? run.ctx.lock_lease : cfg.timeout * 2;
  // Wait for the holder's refresh (renewed while it runs) plus a lease for a dead holder.
  auto deadline =
      std::chrono::steady_clock::now() + std::max(cfg.timeout * 4, cfg.timeout + lease * 3);
  for (;;) {
    const auto seen = lock->update_generation(id);
    auto outcome = co_await lock->acquire(id, run.owner, lease);
    if (outcome == RefreshLock::Outcome::unavailable) {
      // No refresh without the lock: a rotated token that could not be saved is lost.
      run.result.failure = TokenFailure::transient;
      run.result.error = "token store unreachable";
      run.skip = true;
      co_return;
    }
    bool reachable = true;
    auto rec = co_await lock->read(id, &reachable);
    auto now_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(parts_.now().time_since_epoch())
            .count();
    if (rec && rec->version > run.base_version && !rec->access_token.empty() &&
        (rec->expires_at_ms == 0 || rec->expires_at_ms > now_ms)) {
      run.adopted = rec;  // another replica already refreshed
      if (outcome == RefreshLock::Outcome::acquired) co_await lock->release(id, run.owner);
      run.owner.clear();
      co_return;
    }
    if (outcome == RefreshLock::Outcome::acquired) {
      if (rec) {
        run.base_version = std::max(run.base_version, rec->version);
        if (!rec->refresh_token.empty() && run.grant == "refresh_token")
          run.refresh_token = rec->refresh_token;
      }
      // Keep the lease alive while the token request runs.
      *run.renewing = true;
      // The executor first: GCC 12 mishandles a temporary lambda in a full expression that
      // also co_awaits (its captures were destroyed twice).
      auto executor = co_await asio::this_coro::executor;
      asio::co_spawn(
          executor,
          [lock, id, owner = run.owner, lease, renewing = run.renewing]() -> asio::awaitable<void> {
            asio::steady_timer t(co_await asio::this_coro::executor);
            while (*renewing) {
              t.expires_after(lease / 3);
              co_await t.async_wait(nothrow);
              if (*renewing) co_await lock->renew(id, owner, lease);
            }
          },
          asio::detached);
      co_return;
    }
    waiting_on(*run.c, outcome == RefreshLock::Outcome::settling
                           ? "the token store, just back: other replicas save their newest "
                             "records first"
                           : "another replica's refresh");
    if (std::chrono::steady_clock::now() > deadline) {
      run.result.failure = TokenFailure::transient;
      run.result.error = "another replica holds the refresh lock";
      run.skip = true;
      run.owner.clear();
      co_return;
    }
    // Woken by the holder's save or release (pub/sub); polling is the fallback.
    co_await lock->wait_update(id, seen, Millis(500));
  }
}

// Request: one exchange at the token endpoint.
asio::awaitable<void> TokenCache::request_token(Run& run) {
  if (!run.oauth || run.grant.empty()) {
    run.result.failure = TokenFailure::permanent;
    run.result.error = "no_refresh_token";
    co_return;
  }
  StringMap extra{{"refresh_token", run.refresh_token}, {"redirect_uri", run.ctx.redirect_uri}};
  std::string error;
  auto request = build_token_request(*run.c, run.ctx.overrides, run.grant, extra, &error);
  if (!request) {
    run.result.failure = TokenFailure::permanent;
    run.result.error = "bad_request: " + error;
    co_return;
  }
  waiting_on(*run.c, "the vendor's token endpoint");
  run.result = co_await parts_.endpoint->exchange(std::move(*request), run.ctx.refresh.timeout);
}

// Publish: the new credential, its rotated refresh token durable before the access token is
// used; or the record another replica saved.
asio::awaitable<void> TokenCache::publish(Run& run) {
  auto& c = *run.c;
  if (run.adopted) {
    restore_record(c, *run.adopted);
    run.fresh = c.current();
    run.saved = true;
    co_return;
  }
  if (run.result.failure != TokenFailure::none) co_return;
  std::string render_error;
  auto lifetime = run.result.expires_in ? run.result.expires_in : run.oauth->default_expires_in;
  run.fresh = make_credential(
      c,
      {run.result.access_token,
       run.result.refresh_token.empty() ? run.refresh_token : run.result.refresh_token, run.now,
       lifetime ? run.now + *lifetime : Clock::time_point::max(), run.base_version + 1},
      &render_error);
  if (!run.fresh) {
    run.result.failure = TokenFailure::permanent;
    run.result.error = "render: " + render_error;
    co_return;
  }
  auto record = make_record(c, run.fresh.get());
  record.state = "ready";
  record.last_error.clear();
  waiting_on(c, "the token store");
  run.saved = co_await parts_.writer->save(std::move(record), kSaveWait);
  if (!run.saved)
    log::event(log::Level::warn,
               "the token store has not taken the new record; it stays pending and is retried, "
               "the new token serves from memory",
               {{"connection", c.id}});
  c.publish(run.fresh);
}

// Settle, lease side: release ours; after a permanent failure re-read first, since we may
// have lost a race rather than the grant.
// A lease whose release fails, or whose record the store has not taken yet, goes to the
// writer: it is released (and renewed until then) once the record is saved.
asio::awaitable<void> TokenCache::release_lease(Run& run) {
  if (run.owner.empty() || run.skip) {
    *run.renewing = false;
    co_return;
  }
  if (!run.fresh && run.result.failure == TokenFailure::permanent) {
    auto rec = co_await parts_.lock->read(run.c->id, nullptr);
    if (rec && rec->version > run.base_version && !rec->access_token.empty()) {
      restore_record(*run.c, *rec);
      run.fresh = run.c->current();
      run.saved = true;
    }
  }
  if ((!run.fresh || run.saved) && co_await parts_.lock->release(run.c->id, run.owner)) {
    *run.renewing = false;
    co_return;
  }
  parts_.writer->release_later(run.c->id, run.owner,
                               [renewing = run.renewing] { *renewing = false; });
}

// Settle: the successor gets the token, the lifecycle its new state, the waiters their
// result (the one place a refresh ends).
void TokenCache::settle(Run& run) {
  auto& c = *run.c;
  if (run.fresh) {
    // A reload during the refresh replaced `c` by a successor sharing its lifecycle: the new
    // token (and rotated refresh token) must reach it too, before any waiter wakes, or the
    // successor would redeem the spent refresh token and lose the grant.
    if (auto next = parts_.successor ? parts_.successor(c.id) : nullptr;
        next && next.get() != &c && next->lifecycle == c.lifecycle)
      carry_credential(c, *next);
  }
  const auto& cfg = run.ctx.refresh;
  bool permanent = !run.fresh && run.result.failure == TokenFailure::permanent;
  std::vector<std::function<void()>> waiters;
  ConnectionState from{}, to{};
  {
    std::lock_guard lock(c.lifecycle->mutex);
    auto& lc = *c.lifecycle;
    from = lc.state;
    lc.refreshing = false;
    lc.waiting_on = "";
    waiters.swap(lc.waiters);
    lc.needs_reauth = permanent;
    if (run.fresh) {
      lc.state = ConnectionState::ready;
      lc.last_error.clear();
      lc.backoff = Millis(0);
      lc.last_refresh_at = run.now;
    } else if (permanent) {
      lc.state = ConnectionState::needs_reauth;
      lc.last_error = run.result.error;
      lc.cooldown_until = run.now + cfg.failure_cooldown;
    } else {
      lc.state = ConnectionState::degraded;
      lc.last_error = run.result.error;
      lc.backoff = next_backoff(lc.backoff, cfg.backoff);
      lc.retry_at = run.now + jittered(lc.backoff);
    }
    to = lc.state;
  }
  for (auto& wake : waiters) wake();
  if (permanent) parts_.writer->save_detached(make_record(c, run.old.get()));
  if (parts_.state_changed && health_event(from, to)) {
    auto* cred = run.fresh ? run.fresh.get() : run.old.get();
    parts_.state_changed(c, from, to, cred ? cred->version : 0);
  }
}

// Report: one metric and one log line per refresh (never a token).
void TokenCache::report(const Run& run) const {
  const auto& c = *run.c;
  double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - run.start)
          .count();
  const char* outcome =
      run.fresh ? "ok" : (run.result.error == "invalid_grant" ? "invalid_grant" : "error");
  metrics::token_refresh(c.integration, trigger_name(run.trigger), outcome, ms / 1000);
  nlohmann::json fields = {
      {"connection", c.id}, {"integration", c.integration},  {"trigger", trigger_name(run.trigger)},
      {"grant", run.grant}, {"duration_ms", std::round(ms)}, {"result", outcome}};
  if (run.fresh) {
    if (run.fresh->expires_at != Clock::time_point::max())
      fields["expires_in_s"] =
          std::chrono::duration_cast<std::chrono::seconds>(run.fresh->expires_at - parts_.now())
              .count();
    log::event(log::Level::info, "token refreshed", fields);
    return;
  }
  fields["error"] = run.result.error;
  fields["status"] = run.result.status;
  fields["state"] = run.result.failure == TokenFailure::permanent ? "needs_reauth" : "degraded";
  log::event(log::Level::warn, "token refresh failed", fields);
}

asio::awaitable<void> TokenCache::run_refresh(std::shared_ptr<Connection> c,
                                              RefreshTrigger trigger) {
  Run run;
  run.c = std::move(c);
  run.trigger = trigger;
  run.ctx = parts_.context(*run.c);
  run.old = run.c->current();
  run.oauth = run.c->policy->oauth ? &*run.c->policy->oauth : nullptr;
  run.base_version = run.old ? run.old->version : 0;
  choose_grant(run);
  co_await wait_for_pending(run);
  if (!run.skip && parts_.lock && run.oauth && !run.grant.empty()) co_await take_lease(run);
  if (!run.skip && !run.adopted) {
    co_await request_token(run);
    // A connection that can log in again does (SPEC 4): a password or client_credentials
    // connection whose refresh is refused runs its own grant once before needs_reauth.
    if (run.result.failure == TokenFailure::permanent && run.grant == "refresh_token" &&
        (run.c->grant == "password" || run.c->grant == "client_credentials")) {
      log::event(log::Level::info, "refresh refused; logging in again",
                 {{"connection", run.c->id}, {"grant", run.c->grant}, {"error", run.result.error}});
      run.grant = run.c->grant;
      run.refresh_token.clear();  // spent: kept only if the new answer brings none
      run.result = TokenResult{};
      co_await request_token(run);
    }
  }
  run.now = parts_.now();
  co_await publish(run);
  co_await release_lease(run);
  settle(run);
  report(run);
}

}  // namespace gw
