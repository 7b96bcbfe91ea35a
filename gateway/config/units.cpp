#include "gateway/config/units.hpp"

#include <charconv>
#include <limits>

namespace gw {
namespace {

// Splits "123unit" into the number and the unit; nullopt without digits or on overflow.
std::optional<std::pair<std::uint64_t, std::string_view>> split_number(std::string_view text) {
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end == text.data()) return std::nullopt;
  return std::pair{value, text.substr(static_cast<std::size_t>(end - text.data()))};
}

std::optional<std::uint64_t> checked_mul(std::uint64_t a, std::uint64_t b) {
  if (b != 0 && a > std::numeric_limits<std::uint64_t>::max() / b) return std::nullopt;
  return a * b;
}

constexpr std::uint64_t kMaxDurationMs = 3650ull * 86'400'000;

}  // namespace

std::optional<Millis> parse_duration(std::string_view text) {
  auto parts = split_number(text);
  if (!parts) return std::nullopt;
  auto [value, unit] = *parts;
  std::uint64_t factor = 0;
  if (unit == "ms")
    factor = 1;
  else if (unit == "s")
    factor = 1000;
  else if (unit == "m")
    factor = 60'000;
  else if (unit == "h")
    factor = 3'600'000;
  else if (unit == "d")
    factor = 86'400'000;
  else
    return std::nullopt;
  // At most ten years: a deadline of now + a duration near 2^63 ms overflows the clock, and
  // every operation under it would time out at once (or never).
  auto ms = checked_mul(value, factor);
  if (!ms || *ms > kMaxDurationMs) return std::nullopt;
  return Millis{static_cast<Millis::rep>(*ms)};
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
  auto parts = split_number(text);
  if (!parts) return std::nullopt;
  auto [value, unit] = *parts;
  std::uint64_t factor = 0;
  if (unit.empty() || unit == "B")
    factor = 1;
  else if (unit == "KiB" || unit == "KB" || unit == "k")
    factor = 1024;
  else if (unit == "MiB" || unit == "MB" || unit == "M")
    factor = 1024 * 1024;
  else if (unit == "GiB" || unit == "GB" || unit == "G")
    factor = 1024ull * 1024 * 1024;
  else
    return std::nullopt;
  return checked_mul(value, factor);
}

}  // namespace gw
