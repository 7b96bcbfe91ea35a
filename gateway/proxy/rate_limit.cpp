#include "gateway/proxy/rate_limit.hpp"

#include <ctime>
#include <string>

namespace gw {

namespace {

// A whole HTTP-date in `format` (strptime, C locale), as UTC seconds.
std::optional<std::time_t> http_date(const std::string& text, const char* format) {
  std::tm tm{};
  const char* end = ::strptime(text.c_str(), format, &tm);
  if (!end) return std::nullopt;
  while (*end == ' ') ++end;
  if (*end != '\0') return std::nullopt;
  // Years 1970-9999 only: a date of year 4 ("...08:49:39" then "4", found by fuzz_retry_after)
  // made a time point whose conversion to the clock's nanoseconds overflowed.
  if (tm.tm_year < 70 || tm.tm_year > 8099) return std::nullopt;
  std::time_t t = ::timegm(&tm);
  if (t == static_cast<std::time_t>(-1)) return std::nullopt;
  return t;
}

}  // namespace

std::optional<std::chrono::seconds> parse_retry_after(std::string_view value,
                                                      std::chrono::system_clock::time_point now) {
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  if (value.empty() || value.size() > 64) return std::nullopt;
  if (value.find_first_not_of("0123456789") == std::string_view::npos) {
    // delay-seconds: any number of digits; past the cap, the cap.
    std::int64_t n = 0;
    for (char c : value) {
      n = n * 10 + (c - '0');
      if (n > kMaxCooldown.count()) return kMaxCooldown;
    }
    return std::chrono::seconds(n);
  }
  std::string text(value);
  for (const char* format :
       {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"}) {
    if (auto t = http_date(text, format)) {
      // In whole seconds, so no conversion of either time can overflow.
      long long now_s =
          std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
      long long wait = static_cast<long long>(*t) - now_s;
      if (wait < 0) return std::chrono::seconds(0);
      return wait > kMaxCooldown.count() ? kMaxCooldown : std::chrono::seconds(wait);
    }
  }
  return std::nullopt;
}

std::int64_t unix_ms(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

std::int64_t cooldown_left_seconds(std::int64_t until_ms, std::int64_t now_ms) {
  if (until_ms <= now_ms) return 0;
  return (until_ms - now_ms + 999) / 1000;
}

}  // namespace gw
