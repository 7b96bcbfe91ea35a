#include "gateway/auth/token_cache.hpp"

#include <algorithm>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include <random>

#include "gateway/auth/crypto.hpp"
#include "gateway/auth/token_fetch.hpp"
#include "gateway/observability/log.hpp"
#include "gateway/observability/metrics.hpp"
#include "gateway/proxy/proxy.hpp"
#include "gateway/proxy/routes.hpp"

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

Millis jittered(Millis d) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_real_distribution<double> f(0.5, 1.0);  // "equal jitter"
  return Millis(static_cast<Millis::rep>(static_cast<double>(d.count()) * f(rng)));
}

long long seconds_until(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t - Clock::now()).count();
}

}  // namespace

bool usable(const Credential* c, Clock::time_point now) {
  return c && (!c->access_token.empty() || !c->value.empty()) && c->expires_at > now;
}

TokenCache::TokenCache(RuntimeSource runtime, std::shared_ptr<TokenStore> store)
    : runtime_(std::move(runtime)),
      store_(std::move(store)),
      lock_(dynamic_cast<RefreshLock*>(store_.get())) {}

namespace {

std::int64_t to_ms(Clock::time_point t) {
  if (t == Clock::time_point::max()) return 0;
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

Clock::time_point from_ms(std::int64_t ms) {
  if (ms == 0) return Clock::time_point::max();
  return Clock::time_point(
      std::chrono::duration_cast<Clock::duration>(std::chrono::milliseconds(ms)));
}

}  // namespace

TokenRecord make_record(const Connection& c, const Credential* cred) {
  TokenRecord r;
  r.id = c.id;
  r.integration = c.integration;
  r.grant = c.grant;
  r.vars = c.vars;
  r.created_at_runtime = c.created_at_runtime;
  if (cred) {
    r.access_token = cred->access_token;
    r.refresh_token = cred->refresh_token;
    r.issued_at_ms = to_ms(cred->issued_at);
    r.expires_at_ms = cred->expires_at == Clock::time_point::min() ? 1 : to_ms(cred->expires_at);
    r.version = cred->version;
  }
  std::lock_guard lock(c.lifecycle->mutex);
  r.state = state_name(c.lifecycle->state);
  r.last_error = c.lifecycle->last_error;
  return r;
}

void restore_record(Connection& c, const TokenRecord& r) {
  std::string error;
  auto cred = render_credential(c, r.access_token, &error);
  if (cred) {
    cred->refresh_token = r.refresh_token;
    if (!r.refresh_token.empty()) cred->secrets.push_back(r.refresh_token);
    cred->issued_at = from_ms(r.issued_at_ms);
    cred->expires_at = r.access_token.empty() ? Clock::time_point::min() : from_ms(r.expires_at_ms);
    cred->version = r.version;
    c.publish(std::make_shared<const Credential>(std::move(*cred)));
  }
  std::lock_guard lock(c.lifecycle->mutex);
  if (r.state == "needs_reauth") {
    c.lifecycle->state = ConnectionState::needs_reauth;
    c.lifecycle->needs_reauth = true;
    c.lifecycle->last_error = r.last_error;
  } else {
    c.lifecycle->state = ConnectionState::ready;
    c.lifecycle->needs_reauth = false;
  }
}

namespace {

// Why a connection has no usable token, for the caller's 503. Caller holds the mutex.
CredentialResult describe_unusable(const Connection& c, const Lifecycle& lc) {
  std::string why;
  switch (lc.state) {
    case ConnectionState::needs_reauth:
      why = "connection " + c.id + " needs re-authorization (" + lc.last_error + ")";
      break;
    case ConnectionState::pending_authorization:
      why = "connection " + c.id + " has not been authorized yet";
      break;
    case ConnectionState::degraded:
      why = "the token of connection " + c.id + " expired and refreshing it is failing (" +
            lc.last_error + "); next attempt in " +
            std::to_string(std::max(0LL, seconds_until(lc.retry_at))) + "s";
      break;
    default:
      why = "connection " + c.id + " has no valid token" +
            (lc.last_error.empty() ? std::string() : " (" + lc.last_error + ")");
  }
  return {nullptr, why};
}

}  // namespace

CredentialResult TokenCache::unusable(const Connection& c) const {
  std::lock_guard lock(c.lifecycle->mutex);
  return describe_unusable(c, *c.lifecycle);
}

bool TokenCache::try_begin(Connection& c, bool force, std::string* why) {
  auto& lc = *c.lifecycle;
  auto now = Clock::now();
  if (lc.refreshing) return false;
  if (lc.state == ConnectionState::pending_authorization) return false;
  if (lc.state == ConnectionState::needs_reauth && now < lc.cooldown_until) return false;
  if (!force && lc.state == ConnectionState::degraded && now < lc.retry_at) return false;
  if (force && lc.state == ConnectionState::degraded && now < lc.retry_at &&
      lc.backoff.count() > 0) {
    if (why) *why = "backoff";
    return false;
  }
  lc.refreshing = true;
  return true;
}

void TokenCache::refresh_in_background(std::shared_ptr<Connection> c, RefreshTrigger trigger,
                                       asio::any_io_executor executor) {
  if (c->grant == "static") return;
  {
    std::lock_guard lock(c->lifecycle->mutex);
    if (!try_begin(*c, false, nullptr)) return;
  }
  asio::co_spawn(executor, run_refresh(c, trigger), asio::detached);
}

asio::awaitable<CredentialResult> TokenCache::refresh_now(std::shared_ptr<Connection> c,
                                                          RefreshTrigger trigger) {
  auto executor = co_await asio::this_coro::executor;
  auto timer = std::make_shared<asio::steady_timer>(executor);
  auto rt = runtime_();
  timer->expires_after(rt->config.refresh.timeout * 2 + std::chrono::seconds(1));
  bool start = false;
  std::optional<CredentialResult> refused;
  {
    std::lock_guard lock(c->lifecycle->mutex);
    auto& lc = *c->lifecycle;
    if (!lc.refreshing) start = try_begin(*c, trigger != RefreshTrigger::ahead, nullptr);
    if (!lc.refreshing)
      refused = describe_unusable(*c, lc);
    else  // Wake-ups are posted to this request's own event loop: timers are not thread-safe.
      lc.waiters.push_back(
          [timer] { asio::post(timer->get_executor(), [timer] { timer->cancel(); }); });
  }
  if (refused) co_return *refused;
  if (start) asio::co_spawn(executor, run_refresh(c, trigger), asio::detached);
  co_await timer->async_wait(nothrow);
  auto cred = c->current();
  bool failed = false;
  {
    std::lock_guard lock(c->lifecycle->mutex);
    failed = c->lifecycle->state == ConnectionState::needs_reauth ||
             c->lifecycle->state == ConnectionState::degraded;
  }
  // A forced or rejection-driven refresh that failed has no result, even if the old
  // token has not expired yet.
  bool must_be_new = trigger == RefreshTrigger::forced || trigger == RefreshTrigger::rejected;
  if (usable(cred.get(), Clock::now()) && !(failed && must_be_new))
    co_return CredentialResult{cred, {}};
  co_return unusable(*c);
}

asio::awaitable<CredentialResult> TokenCache::acquire(std::shared_ptr<Connection> c) {
  auto cred = c->current();
  auto now = Clock::now();
  if (c->lifecycle->needs_reauth.load(std::memory_order_relaxed)) {
    // No storm against the vendor: fail fast during the cooldown, then let one through.
    bool cooling = false;
    {
      std::lock_guard lock(c->lifecycle->mutex);
      cooling = now < c->lifecycle->cooldown_until || c->lifecycle->refreshing;
    }
    if (cooling) co_return unusable(*c);
    co_return co_await refresh_now(c, RefreshTrigger::initial);
  }
  if (usable(cred.get(), now)) {
    if (c->grant != "static" && cred->expires_at != Clock::time_point::max()) {
      auto rt = runtime_();
      auto lifetime = cred->expires_at - cred->issued_at;
      auto threshold = std::max<Clock::duration>(rt->config.refresh.skew, lifetime / 10);
      if (cred->expires_at - now < threshold)
        refresh_in_background(c, RefreshTrigger::ahead, co_await asio::this_coro::executor);
    }
    co_return CredentialResult{std::move(cred), {}};
  }
  if (c->grant == "static") {
    co_return CredentialResult{nullptr,
                               cred ? "the static token of connection " + c->id + " has expired"
                                    : "connection " + c->id + " has no credential"};
  }
  // An expired token is never injected: wait for the refresh.
  co_return co_await refresh_now(
      c, cred && !cred->access_token.empty() ? RefreshTrigger::ahead : RefreshTrigger::initial);
}

asio::awaitable<CredentialResult> TokenCache::rejected(std::shared_ptr<Connection> c,
                                                       std::shared_ptr<const Credential> used,
                                                       std::size_t what) {
  if (c->grant == "static") {
    {
      std::lock_guard lock(c->lifecycle->mutex);
      c->lifecycle->last_error = "the vendor rejected the static credential";
    }
    log::event(log::Level::warn, "static credential rejected",
               {{"connection", c->id}, {"integration", c->integration}});
    co_return CredentialResult{nullptr, "the vendor rejected the static credential of " + c->id};
  }
  auto cur = c->current();
  // Another request already renewed the token: replay with the newer one.
  if (cur && used && cur->version > used->version && usable(cur.get(), Clock::now()))
    co_return CredentialResult{cur, {}};
  {
    // No refresh storm from an endpoint that answers 401 whatever the token: not for a token
    // the vendor rejected on its first use after a refresh, and at most one rejection-driven
    // refresh per kRejectionRefreshInterval.
    std::lock_guard lock(c->lifecycle->mutex);
    auto& lc = *c->lifecycle;
    auto now = std::chrono::steady_clock::now();
    // A refresh in flight is joined (every waiter gets its result), whatever the limits say;
    // one that ended since the check above left a newer token.
    auto latest = c->current();
    bool newer = latest && used && latest->version > used->version;
    if (lc.refreshing || newer) {
      // Join, or take the newer token below.
    } else if (used && lc.rejected_again_version == used->version &&
               std::find(lc.rejected_again.begin(), lc.rejected_again.end(), what) !=
                   lc.rejected_again.end()) {
      co_return CredentialResult{nullptr,
                                 "the vendor rejected this request with a fresh token of " + c->id +
                                     " too; not refreshing again"};
    } else if (now - lc.last_rejection_refresh < kRejectionRefreshInterval) {
      co_return CredentialResult{nullptr, "connection " + c->id +
                                              " was refreshed for a "
                                              "rejection under " +
                                              std::to_string(kRejectionRefreshInterval.count()) +
                                              " ms ago"};
    } else {
      lc.last_rejection_refresh = now;
    }
  }
  auto result = co_await refresh_now(c, RefreshTrigger::rejected);
  if (result.credential && used && result.credential->version <= used->version)
    co_return CredentialResult{nullptr, "no newer token for connection " + c->id};
  co_return result;
}

void TokenCache::rejected_again(Connection& c, const Credential& replayed, std::size_t what) {
  std::lock_guard lock(c.lifecycle->mutex);
  auto& lc = *c.lifecycle;
  if (lc.rejected_again_version != replayed.version) {
    lc.rejected_again_version = replayed.version;
    lc.rejected_again.clear();
  }
  if (lc.rejected_again.size() >= kRejectedRequestsKept)
    lc.rejected_again.erase(lc.rejected_again.begin());
  if (std::find(lc.rejected_again.begin(), lc.rejected_again.end(), what) ==
      lc.rejected_again.end())
    lc.rejected_again.push_back(what);
}

asio::awaitable<void> TokenCache::run_refresh(std::shared_ptr<Connection> c,
                                              RefreshTrigger trigger) {
  auto rt = runtime_();
  auto executor = co_await asio::this_coro::executor;
  auto start = std::chrono::steady_clock::now();
  auto old = c->current();
  const auto& refresh_cfg = rt->config.refresh;
  const OAuthSpec* oauth = c->policy->oauth ? &*c->policy->oauth : nullptr;

  UrlOverrides overrides;
  if (auto it = rt->routes->integrations.find(c->integration); it != rt->routes->integrations.end())
    overrides = it->second->config.overrides;
  std::string refresh_token = old ? old->refresh_token : "";
  if (refresh_token.empty()) {
    if (auto it = c->credentials.find("refresh_token"); it != c->credentials.end())
      refresh_token = it->second;
  }
  std::string grant;
  if (!refresh_token.empty() && oauth && oauth->grants.count("refresh_token"))
    grant = "refresh_token";
  else if (c->grant == "client_credentials" || c->grant == "password")
    grant = c->grant;

  TokenResult result;
  std::string error;
  std::optional<TokenRequest> request;
  std::uint64_t base_version = old ? old->version : 0;

  // Cluster single flight (redis store): hold the lease lock for the refresh; whoever
  // loses waits for the winner's record instead of refreshing.
  std::string owner;
  std::optional<TokenRecord> adopted;
  bool skip = false;
  auto renewing = std::make_shared<bool>(false);
  if (lock_ && oauth && !grant.empty()) {
    owner = crypto::base64(crypto::random_bytes(12));
    const Millis configured = rt->config.store.redis.lock_lease;
    const Millis lease = configured.count() ? configured : refresh_cfg.timeout * 2;
    // Wait for the holder's refresh (renewed while it runs) plus a lease for a dead holder.
    auto deadline = std::chrono::steady_clock::now() +
                    std::max(refresh_cfg.timeout * 4, refresh_cfg.timeout + lease * 3);
    for (;;) {
      const auto seen = lock_->update_generation(c->id);
      auto outcome = co_await lock_->acquire(c->id, owner, lease);
      if (outcome == RefreshLock::Outcome::unavailable) {
        // No refresh without the lock: a rotated token that could not be saved is lost.
        result.failure = TokenFailure::transient;
        result.error = "token store unreachable";
        skip = true;
        break;
      }
      bool reachable = true;
      auto rec = co_await lock_->read(c->id, &reachable);
      if (rec && rec->version > base_version && !rec->access_token.empty() &&
          (rec->expires_at_ms == 0 ||
           rec->expires_at_ms > std::chrono::duration_cast<std::chrono::milliseconds>(
                                    Clock::now().time_since_epoch())
                                    .count())) {
        adopted = rec;  // another replica already refreshed
        if (outcome == RefreshLock::Outcome::acquired) co_await lock_->release(c->id, owner);
        owner.clear();
        break;
      }
      if (outcome == RefreshLock::Outcome::acquired) {
        if (rec) {
          base_version = std::max(base_version, rec->version);
          if (!rec->refresh_token.empty() && grant == "refresh_token")
            refresh_token = rec->refresh_token;
        }
        // Keep the lease alive while the token request runs.
        *renewing = true;
        asio::co_spawn(
            executor,
            [this, id = c->id, owner, lease, renewing]() -> asio::awaitable<void> {
              asio::steady_timer t(co_await asio::this_coro::executor);
              while (*renewing) {
                t.expires_after(lease / 3);
                co_await t.async_wait(nothrow);
                if (*renewing) co_await lock_->renew(id, owner, lease);
              }
            },
            asio::detached);
        break;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        result.failure = TokenFailure::transient;
        result.error = "another replica holds the refresh lock";
        skip = true;
        break;
      }
      // Woken by the holder's save or release (pub/sub); polling is the fallback.
      co_await lock_->wait_update(c->id, seen, Millis(500));
    }
  }

  if (skip || adopted) {
    // nothing to request
  } else if (!oauth || grant.empty()) {
    result.failure = TokenFailure::permanent;
    result.error = "no_refresh_token";
  } else {
    StringMap extra{{"refresh_token", refresh_token},
                    {"redirect_uri", rt->config.admin.public_url + "/oauth/callback"}};
    request = build_token_request(*c, overrides, grant, extra, &error);
    if (!request) {
      result.failure = TokenFailure::permanent;
      result.error = "bad_request: " + error;
    } else {
      result = co_await fetch_token(executor, rt->client_tls, *request, refresh_cfg.timeout);
    }
  }

  auto now = Clock::now();
  std::shared_ptr<const Credential> fresh;
  if (adopted) {
    restore_record(*c, *adopted);
    fresh = c->current();
  } else if (result.failure == TokenFailure::none) {
    std::string render_error;
    auto cred = render_credential(*c, result.access_token, &render_error);
    if (!cred) {
      result.failure = TokenFailure::permanent;
      result.error = "render: " + render_error;
    } else {
      cred->refresh_token = result.refresh_token.empty() ? refresh_token : result.refresh_token;
      cred->issued_at = now;
      auto lifetime = result.expires_in ? result.expires_in : oauth->default_expires_in;
      cred->expires_at = lifetime ? now + *lifetime : Clock::time_point::max();
      cred->version = base_version + 1;
      if (!cred->refresh_token.empty()) cred->secrets.push_back(cred->refresh_token);
      fresh = std::make_shared<const Credential>(std::move(*cred));
      // A rotated refresh token must be durable before the new access token is used.
      auto record = make_record(*c, fresh.get());
      record.state = "ready";
      record.last_error.clear();
      bool saved = store_->save(record);
      metrics::store_operation("save", saved);
      if (!saved)
        log::event(log::Level::error,
                   "token store write failed; the new token lives in memory only",
                   {{"connection", c->id}});
      c->publish(fresh);
    }
  }
  *renewing = false;
  if (!owner.empty() && !skip) {
    if (!fresh && result.failure == TokenFailure::permanent) {
      // Maybe we lost a race, not the grant: another replica's newer record may be there.
      auto rec = co_await lock_->read(c->id, nullptr);
      if (rec && rec->version > base_version && !rec->access_token.empty()) {
        restore_record(*c, *rec);
        fresh = c->current();
      }
    }
    co_await lock_->release(c->id, owner);
  }

  if (fresh) {
    // A reload during the refresh replaced `c` by a successor sharing its lifecycle: the
    // new token (and rotated refresh token) must reach it too, before any waiter wakes,
    // or the successor would redeem the spent refresh token and lose the grant.
    auto latest = runtime_();
    auto it = latest->routes->connections.find(c->id);
    if (it != latest->routes->connections.end() && it->second.get() != c.get() &&
        it->second->lifecycle == c->lifecycle)
      carry_credential(*c, *it->second);
  }
  std::vector<std::function<void()>> waiters;
  {
    std::lock_guard lock(c->lifecycle->mutex);
    auto& lc = *c->lifecycle;
    lc.refreshing = false;
    waiters.swap(lc.waiters);
    lc.needs_reauth = !fresh && result.failure == TokenFailure::permanent;
    if (fresh) {
      lc.state = ConnectionState::ready;
      lc.last_error.clear();
      lc.backoff = Millis(0);
      lc.last_refresh_at = now;
    } else if (result.failure == TokenFailure::permanent) {
      lc.state = ConnectionState::needs_reauth;
      lc.last_error = result.error;
      lc.cooldown_until = now + refresh_cfg.failure_cooldown;
    } else {
      lc.state = ConnectionState::degraded;
      lc.last_error = result.error;
      lc.backoff = lc.backoff.count() == 0 ? refresh_cfg.backoff.initial
                                           : std::min(refresh_cfg.backoff.max, lc.backoff * 2);
      lc.retry_at = now + jittered(lc.backoff);
    }
  }
  for (auto& wake : waiters) wake();
  if (!fresh && result.failure == TokenFailure::permanent) store_->save(make_record(*c, old.get()));

  double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  nlohmann::json fields = {{"connection", c->id},
                           {"integration", c->integration},
                           {"trigger", trigger_name(trigger)},
                           {"grant", grant},
                           {"duration_ms", std::round(ms)}};
  metrics::token_refresh(
      c->integration, trigger_name(trigger),
      fresh ? "ok" : (result.error == "invalid_grant" ? "invalid_grant" : "error"), ms / 1000);
  if (fresh) {
    fields["result"] = "ok";
    if (fresh->expires_at != Clock::time_point::max())
      fields["expires_in_s"] = seconds_until(fresh->expires_at);
    log::event(log::Level::info, "token refreshed", fields);
  } else {
    fields["result"] = result.error == "invalid_grant" ? "invalid_grant" : "error";
    fields["error"] = result.error;
    fields["status"] = result.status;
    fields["state"] = result.failure == TokenFailure::permanent ? "needs_reauth" : "degraded";
    log::event(log::Level::warn, "token refresh failed", fields);
  }
}

}  // namespace gw
