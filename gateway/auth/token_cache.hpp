// The OAuth token lifecycle (SPEC section 6) behind the TokenProvider seam: tokens refreshed
// ahead of expiry in the background, at most one refresh per connection in flight with every
// waiter getting its result, a forced refresh when the vendor rejects a token, backoff with
// jitter after transient failures and a cooldown after permanent ones.
#pragma once
#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <functional>
#include <memory>

#include "gateway/auth/store_writer.hpp"
#include "gateway/auth/token_endpoint.hpp"
#include "gateway/auth/token_provider.hpp"
#include "gateway/auth/token_store.hpp"

namespace gw {

enum class RefreshTrigger { ahead, rejected, forced, initial };

// Rejection-driven refreshes of one connection: at most one per interval, and none for a
// request (method and path) the vendor rejected with a fresh token on its first use too: that
// 401 is about the request, not the token, and 20 such requests must not rotate the refresh
// token 20 times. Other requests still refresh a token the vendor really revoked.
constexpr std::chrono::milliseconds kRejectionRefreshInterval{1000};
constexpr std::size_t kRejectedRequestsKept = 32;

// What a refresh of one connection needs from the configuration current when it starts
// (a reload may change any of it).
struct RefreshContext {
  RefreshConfig refresh;
  Millis lock_lease{0};      // store.redis.lock_lease; 0: twice refresh.timeout
  std::string redirect_uri;  // {admin.public_url}/oauth/callback
  UrlOverrides overrides;    // the connection's integration's
};

// Everything the token cache depends on, given explicitly (STYLE 7: a seam at each remote
// dependency; tests pass fakes and a manual clock).
struct TokenCacheParts {
  std::function<RefreshContext(const Connection&)> context;
  // The connection object now routed under `id` (a reload may have replaced the one a
  // refresh started on), or null.
  std::function<std::shared_ptr<Connection>(const std::string& id)> successor;
  std::shared_ptr<TokenEndpoint> endpoint;
  std::shared_ptr<StoreWriter> writer;  // every store write goes through it, off the loops
  RefreshLock* lock = nullptr;          // the store's cluster lock (redis), else null
  std::function<Clock::time_point()> now = [] { return Clock::now(); };
  // Told of every change of a connection's state a refresh makes (health events, SPEC 6.10),
  // with the credential version it is about; may be empty.
  std::function<void(const Connection&, ConnectionState from, ConnectionState to,
                     std::uint64_t version)>
      state_changed;
};

class TokenCache final : public TokenProvider {
 public:
  explicit TokenCache(TokenCacheParts parts);

  boost::asio::awaitable<CredentialResult> acquire(std::shared_ptr<Connection> c) override;
  boost::asio::awaitable<CredentialResult> rejected(std::shared_ptr<Connection> c,
                                                    std::shared_ptr<const Credential> used,
                                                    std::size_t what) override;
  void rejected_again(Connection& c, const Credential& replayed, std::size_t what) override;
  // Waits for a refresh of `c` (joining one in flight, else starting one with `trigger`).
  boost::asio::awaitable<CredentialResult> refresh_now(std::shared_ptr<Connection> c,
                                                       RefreshTrigger trigger);
  // Starts a background refresh unless one is running or backoff/cooldown forbids it.
  void refresh_in_background(std::shared_ptr<Connection> c, RefreshTrigger trigger,
                             boost::asio::any_io_executor executor);

 private:
  struct Run;  // one refresh's state, phase to phase (token_refresh.cpp)

  bool try_begin(Connection& c, bool force, std::string* why);
  boost::asio::awaitable<void> run_refresh(std::shared_ptr<Connection> c, RefreshTrigger trigger);
  void choose_grant(Run& run) const;
  boost::asio::awaitable<void> take_lease(Run& run);
  boost::asio::awaitable<void> request_token(Run& run);
  boost::asio::awaitable<void> publish(Run& run);
  boost::asio::awaitable<void> release_lease(Run& run);
  void settle(Run& run);
  boost::asio::awaitable<void> wait_for_pending(Run& run);
  void report(const Run& run) const;
  CredentialResult unusable(const Connection& c) const;

  TokenCacheParts parts_;
};

// Backoff after a transient failure: `initial`, then doubling up to `max`; each wait drawn
// from [half, all] of it ("equal jitter").
Millis next_backoff(Millis current, const BackoffConfig& config);
Millis jittered(Millis d);

// The stored form of a connection's credential and state, and back.
TokenRecord make_record(const Connection& c, const Credential* cred);
// Publishes the stored token and state on `c` (the store wins over the config's bootstrap).
void restore_record(Connection& c, const TokenRecord& record);

bool usable(const Credential* c, Clock::time_point now);

// How much of a token's lifetime may be left when a request starts a refresh ahead of
// expiry: max(skew, 10% of the lifetime), but never more than half of it, so short tokens
// cause no storm (SPEC 6.1).
Clock::duration refresh_ahead_threshold(Clock::duration lifetime, Millis skew);

}  // namespace gw
