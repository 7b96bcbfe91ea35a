// A connection's credential as the proxy uses it: an immutable snapshot that is replaced,
// never modified, so request threads read it without waiting on a refresh (STYLE 8).
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "gateway/config/config.hpp"
#include "gateway/config/url.hpp"
#include "gateway/policy/policy.hpp"
#include "gateway/snapshot.hpp"

namespace gw {

using Clock = std::chrono::system_clock;

struct Credential {
  std::uint64_t version = 0;  // increases with every new token of the connection
  std::string access_token;   // empty for static API keys and before the first token
  std::string refresh_token;  // empty when the grant has none
  Clock::time_point expires_at = Clock::time_point::max();  // max(): never expires
  Clock::time_point issued_at{};

  // Pre-rendered injection: the header (or query parameter) name and its value.
  InjectKind kind = InjectKind::header;
  std::string name;
  std::string value;
  // Every value that must never travel back to the caller or reach a log.
  std::vector<std::string> secrets;
};

enum class ConnectionState { ready, refreshing, degraded, needs_reauth, pending_authorization };
const char* state_name(ConnectionState s);
// The health event (SPEC 6.10) a change of state is, or null: needs_reauth, degraded, and
// recovered when a degraded or needs_reauth connection is ready again. (connected and deleted
// come from onboarding and the admin API.)
const char* health_event(ConnectionState from, ConnectionState to);

// The refresh bookkeeping of one connection, guarded by `mutex` (never held across a
// co_await): single flight, waiters, backoff and cooldown.
struct Lifecycle {
  std::mutex mutex;
  bool refreshing = false;
  std::vector<std::function<void()>> waiters;  // each wakes one waiting request
  const char* waiting_on = "";                 // what a running refresh waits for, for 503s
  ConnectionState state = ConnectionState::ready;
  std::string last_error;
  Clock::time_point last_refresh_at{}, retry_at{}, cooldown_until{};
  Millis backoff{0};
  // Rejection-driven refreshes: the last one's time, and the requests (hashes of method and
  // path) the vendor rejected even with token `rejected_again_version`, fresh.
  Clock::time_point last_rejection_refresh{};
  std::uint64_t rejected_again_version = 0;
  std::vector<std::size_t> rejected_again;
  // Mirrors state == needs_reauth for the request path, which must not take the mutex.
  std::atomic<bool> needs_reauth{false};
  // The vendor's cool-down (SPEC 5.1): Unix ms until which it asked this connection to wait,
  // 0 when it never did. Wall-clock, so that every replica agrees on it.
  std::atomic<std::int64_t> rate_limited_until_ms{0};
};

// One authorized vendor account. The identity and rendered values are fixed at creation;
// only the credential snapshot changes.
class Connection {
 public:
  std::string id;
  std::string integration;
  std::string grant;
  StringMap vars;         // policy defaults < integration vars < connection vars
  StringMap credentials;  // bootstrap credentials from the config or the admin API
  UpstreamTarget upstream;
  std::shared_ptr<const Policy> policy;
  std::string client_id, client_secret;
  std::shared_ptr<Lifecycle> lifecycle = std::make_shared<Lifecycle>();
  bool created_at_runtime = false;  // by the admin API or onboarding, not the config

  std::shared_ptr<const Credential> current() const { return credential_.load(); }
  void publish(std::shared_ptr<const Credential> c) { credential_.store(std::move(c)); }

 private:
  Snapshot<Credential> credential_;
};

// Printable ASCII only (RFC 6749 VSCHAR, %x20-7E): what may go into a header line as is. A
// CR or LF in a token or credential would otherwise forge header lines upstream.
bool visible_ascii(std::string_view value);

// What a credential snapshot is made of, wherever the token came from (bootstrap, refresh,
// onboarding, the store, a reload's predecessor).
struct TokenGrant {
  std::string access_token, refresh_token;
  Clock::time_point issued_at{}, expires_at = Clock::time_point::max();
  std::uint64_t version = 0;
};

// The one recipe for a connection's credential: the injection rendered for `c`, every value
// that must stay secret listed for redaction (the refresh token among them). Null with
// `error` set when render_credential refuses.
std::shared_ptr<const Credential> make_credential(const Connection& c, TokenGrant grant,
                                                  std::string* error = nullptr);

// Publishes `from`'s credential on `to` (rendered for `to`): how a token refreshed on a
// connection object that a reload has since replaced reaches its successor.
void carry_credential(const Connection& from, Connection& to);

// Renders the policy's inject spec for `token` into a Credential. Nullopt with `error` set
// when a placeholder has no value, or a header value would not be visible ASCII.
std::optional<Credential> render_credential(const Connection& connection, std::string access_token,
                                            std::string* error);

// Looks up a placeholder for a connection: its vars, then credentials, then client
// id/secret and the extra values given (access_token, redirect_uri, state).
std::optional<std::string> lookup_placeholder(const Connection& connection, const StringMap& extra,
                                              std::string_view name);

}  // namespace gw
