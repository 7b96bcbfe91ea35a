// The vendor's rate limits in the request's story (session_impl.hpp tells it, SPEC 5.1): the
// check before a request goes out, and the cool-down a 429/503 with Retry-After starts. The
// arithmetic is in rate_limit.hpp; sharing with other replicas in cooldown.cpp.
#pragma once
#include "gateway/proxy/session_impl.hpp"

namespace gw {
namespace {

template <class Stream>
inline std::int64_t Session<Stream>::cooldown_left(const Integration& integ,
                                                   const Connection& conn) {
  auto mode = integ.config.rate_limit;
  auto until = conn.lifecycle->rate_limited_until_ms.load(std::memory_order_relaxed);
  if (until == 0 || mode == RateLimitMode::off) return 0;  // no clock read on the usual path
  auto left = cooldown_left_seconds(until, unix_ms(std::chrono::system_clock::now()));
  if (left == 0) return 0;
  bool enforced = mode == RateLimitMode::enforce;
  metrics::rate_limited(integ.config.name, enforced ? "enforced" : "observed");
  return enforced ? left : 0;
}

template <class Stream>
inline void Session<Stream>::note_cooldown(const Integration& integ, Connection& conn,
                                           const ResponseParser& rp, const Exchange& ex) {
  if (integ.config.rate_limit == RateLimitMode::off) return;
  auto now = std::chrono::system_clock::now();
  auto wait = parse_retry_after(rp[http::field::retry_after], now);
  if (!wait || wait->count() == 0) return;
  auto until = unix_ms(now) + std::chrono::duration_cast<std::chrono::milliseconds>(*wait).count();
  // Answers within the same second say the same: one log line and one publication per
  // change, not per answer (a throttling vendor answers many at once).
  // (A change of less than a second is no change.)
  if (until < conn.lifecycle->rate_limited_until_ms.load() + 1000 ||
      !raise_cooldown(*conn.lifecycle, until))
    return;
  log::event(
      log::Level::warn, "the vendor asked this connection to wait",
      {{"request_id", ex.request_id},
       {"integration", ex.integration},
       {"connection", conn.id},
       {"status", ex.upstream_status},
       {"retry_after_s", wait->count()},
       {"rate_limit", integ.config.rate_limit == RateLimitMode::enforce ? "enforce" : "observe"}});
  if (worker_.shared.publish_cooldown)
    asio::co_spawn(worker_.ioc, worker_.shared.publish_cooldown(conn.id, until), asio::detached);
}

}  // namespace
}  // namespace gw
