// Parsing of the configuration's duration ("250ms", "30s", "5m", "24h", "180d") and
// size ("16384", "64KiB", "10MiB", "1GiB") strings. Pure; used by config and policy loaders.
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

namespace gw {

using Millis = std::chrono::milliseconds;

// Returns nullopt when the text is not a non-negative integer followed by a known unit.
std::optional<Millis> parse_duration(std::string_view text);
std::optional<std::uint64_t> parse_size(std::string_view text);

}  // namespace gw
