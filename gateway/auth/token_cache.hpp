// The OAuth token lifecycle (SPEC section 6) behind the TokenProvider seam: tokens refreshed
// ahead of expiry in the background, at most one refresh per connection in flight with every
// waiter getting its result, a forced refresh when the vendor rejects a token, backoff with
// jitter after transient failures and a cooldown after permanent ones.
#pragma once
#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <functional>
#include <memory>

#include "gateway/auth/token_provider.hpp"
#include "gateway/auth/token_store.hpp"

namespace gw {

struct Runtime;

enum class RefreshTrigger { ahead, rejected, forced, initial };

// Rejection-driven refreshes of one connection: at most one per interval, and none for a
// request (method and path) the vendor rejected with a fresh token on its first use too: that
// 401 is about the request, not the token, and 20 such requests must not rotate the refresh
// token 20 times. Other requests still refresh a token the vendor really revoked.
constexpr std::chrono::milliseconds kRejectionRefreshInterval{1000};
constexpr std::size_t kRejectedRequestsKept = 32;

class TokenCache final : public TokenProvider {
 public:
  using RuntimeSource = std::function<std::shared_ptr<const Runtime>()>;
  TokenCache(RuntimeSource runtime, std::shared_ptr<TokenStore> store);

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
  bool try_begin(Connection& c, bool force, std::string* why);
  boost::asio::awaitable<void> run_refresh(std::shared_ptr<Connection> c, RefreshTrigger trigger);
  CredentialResult unusable(const Connection& c) const;

  RuntimeSource runtime_;
  std::shared_ptr<TokenStore> store_;
  RefreshLock* lock_;  // the store's, when it coordinates a cluster (redis); else null
};

// The stored form of a connection's credential and state, and back.
TokenRecord make_record(const Connection& c, const Credential* cred);
// Publishes the stored token and state on `c` (the store wins over the config's bootstrap).
void restore_record(Connection& c, const TokenRecord& record);

bool usable(const Credential* c, Clock::time_point now);

}  // namespace gw
