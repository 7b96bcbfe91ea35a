// libFuzzer target: a vendor's Retry-After value (SPEC 5.1). Whatever it holds, the wait is
// between zero and the 15-minute cap, a value of digits only is read as seconds, and nothing
// reads past the value.
#include <chrono>
#include <cstdint>
#include <string_view>

#include "gateway/proxy/rate_limit.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view value(reinterpret_cast<const char*>(data), size);
  auto now = std::chrono::system_clock::from_time_t(1'800'000'000);
  auto wait = gw::parse_retry_after(value, now);
  if (wait && (wait->count() < 0 || *wait > gw::kMaxCooldown)) __builtin_trap();
  bool digits = !value.empty() && value.size() <= 64 &&
                value.find_first_not_of("0123456789") == std::string_view::npos;
  if (digits && !wait) __builtin_trap();
  return 0;
}
