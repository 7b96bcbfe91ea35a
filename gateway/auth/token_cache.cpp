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

#include "gateway/observability/log.hpp"
#include "gateway/observability/metrics.hpp"

namespace gw {

namespace asio = boost::asio;
constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

namespace {

long long seconds_until(Clock::time_point t, Clock::time_point now) {
  return std::chrono::duration_cast<std::chrono::seconds>(t - now).count();
}

}  // namespace

Clock::duration refresh_ahead_threshold(Clock::duration lifetime, Millis skew) {
  auto threshold = std::max<Clock::duration>(skew, lifetime / 10);
  return std::min(threshold, lifetime / 2);
}

bool usable(const Credential* c, Clock::time_point now) {
  return c && (!c->access_token.empty() || !c->value.empty()) && c->expires_at > now;
}

TokenCache::TokenCache(TokenCacheParts parts) : parts_(std::move(parts)) {}

namespace {

// Why a connection has no usable token, for the caller's 503. Caller holds the mutex.
CredentialResult describe_unusable(const Connection& c, const Lifecycle& lc,
                                   Clock::time_point now) {
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
            std::to_string(std::max(0LL, seconds_until(lc.retry_at, now))) + "s";
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
  return describe_unusable(c, *c.lifecycle, parts_.now());
}

bool TokenCache::try_begin(Connection& c, bool force, std::string* why) {
  auto& lc = *c.lifecycle;
  auto now = parts_.now();
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
  // A waiter waits for the refresh.timeout and a second at most (SPEC 6.1), whatever the
  // refresh itself waits for (another replica's lease, the store).
  const auto wait = parts_.context(*c).refresh.timeout + std::chrono::seconds(1);
  timer->expires_after(wait);
  bool start = false;
  std::optional<CredentialResult> refused;
  {
    std::lock_guard lock(c->lifecycle->mutex);
    auto& lc = *c->lifecycle;
    if (!lc.refreshing) start = try_begin(*c, trigger != RefreshTrigger::ahead, nullptr);
    if (!lc.refreshing)
      refused = describe_unusable(*c, lc, parts_.now());
    else  // Wake-ups are posted to this request's own event loop: timers are not thread-safe.
      lc.waiters.push_back(
          [timer] { asio::post(timer->get_executor(), [timer] { timer->cancel(); }); });
  }
  if (refused) co_return *refused;
  if (start) asio::co_spawn(executor, run_refresh(c, trigger), asio::detached);
  co_await timer->async_wait(nothrow);
  auto cred = c->current();
  bool failed = false;
  std::string still;
  {
    std::lock_guard lock(c->lifecycle->mutex);
    failed = c->lifecycle->state == ConnectionState::needs_reauth ||
             c->lifecycle->state == ConnectionState::degraded;
    if (c->lifecycle->refreshing && *c->lifecycle->waiting_on) still = c->lifecycle->waiting_on;
  }
  // A forced or rejection-driven refresh that failed has no result, even if the old
  // token has not expired yet.
  bool must_be_new = trigger == RefreshTrigger::forced || trigger == RefreshTrigger::rejected;
  if (usable(cred.get(), parts_.now()) && !(failed && must_be_new))
    co_return CredentialResult{cred, {}};
  if (!still.empty())
    co_return CredentialResult{
        nullptr, "the refresh of connection " + c->id + " did not finish within " +
                     std::to_string(std::chrono::duration_cast<Millis>(wait).count()) +
                     " ms (waiting for " + still + ")"};
  co_return unusable(*c);
}

asio::awaitable<CredentialResult> TokenCache::acquire(std::shared_ptr<Connection> c) {
  auto cred = c->current();
  auto now = parts_.now();
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
      if (cred->expires_at - now < refresh_ahead_threshold(cred->expires_at - cred->issued_at,
                                                           parts_.context(*c).refresh.skew))
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
  if (cur && used && cur->version > used->version && usable(cur.get(), parts_.now()))
    co_return CredentialResult{cur, {}};
  {
    // No refresh storm from an endpoint that answers 401 whatever the token: not for a token
    // the vendor rejected on its first use after a refresh, and at most one rejection-driven
    // refresh per kRejectionRefreshInterval.
    std::lock_guard lock(c->lifecycle->mutex);
    auto& lc = *c->lifecycle;
    auto now = parts_.now();
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

}  // namespace gw
