// The vendor's rate limits (SPEC 5.1), as plain functions of values: what a Retry-After asks
// for, and what a connection's cool-down has left. The session applies them (session_impl.hpp:
// the check before a request goes out, the update after an answer comes back).
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

namespace gw {

// The longest cool-down honoured (a vendor asking for more gets this).
inline constexpr std::chrono::seconds kMaxCooldown{15 * 60};

// Retry-After (RFC 9110 10.2.3): delay-seconds, or an HTTP-date in any of its three forms
// (IMF-fixdate, RFC 850, asctime). The wait it asks for from `now`, at most kMaxCooldown, and
// zero for a date already past; nullopt when the value is neither.
std::optional<std::chrono::seconds> parse_retry_after(std::string_view value,
                                                      std::chrono::system_clock::time_point now);

// Whether an answer with this status starts a cool-down (when it carries a Retry-After).
inline bool starts_cooldown(unsigned status) {
  return status == 429 || status == 503;
}

// Unix milliseconds: cool-downs are wall-clock times so that replicas agree on them.
std::int64_t unix_ms(std::chrono::system_clock::time_point t);

// The whole seconds a cool-down ending at `until_ms` has left at `now_ms` (rounded up), or 0
// when it is over.
std::int64_t cooldown_left_seconds(std::int64_t until_ms, std::int64_t now_ms);

}  // namespace gw
