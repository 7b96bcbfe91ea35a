// One exchange as the access log tells it: its request id, where it went, what came back,
// how long it took. Standard library only, so unit tests reach it without sockets.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace gw {

using SteadyClock = std::chrono::steady_clock;

inline double ms_since(SteadyClock::time_point t) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - t).count();
}

// What the access log says of one exchange.
struct Exchange {
  SteadyClock::time_point start = SteadyClock::now();
  std::string request_id, integration, connection, method, path;
  std::string trace_id;  // from the caller's traceparent (W3C Trace Context), empty without
  unsigned status = 0, upstream_status = 0;
  double upstream_ms = 0;
  bool retried = false;
  std::uint64_t bytes_in = 0, bytes_out = 0;
};

// A fresh request id: 24 lowercase hex digits.
std::string new_request_id();

// Whether a caller's X-Request-Id may be kept as ours: 1 to 128 visible ASCII characters.
bool usable_request_id(std::string_view id);

// The trace id of a W3C traceparent ("00-<32 hex>-<16 hex>-<2 hex>"), empty when the header
// is absent or malformed (an all-zero id is invalid too). Lowercase hex only, as the
// specification says.
std::string_view traceparent_trace_id(std::string_view traceparent);

// Counts the exchange in the metrics and, when `access_log`, writes its access-log line.
void finish(const Exchange& ex, bool access_log);

}  // namespace gw
