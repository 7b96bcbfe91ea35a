// JSON-lines logging on stdout (SPEC section 9). One object per line, written whole under a
// lock so threads never interleave. Callers pass no secrets: only ids, names and codes.
#pragma once
#include <nlohmann/json_fwd.hpp>

#include <string>
#include <string_view>

namespace gw::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3 };

void set_level(Level level);
// Now, as the log lines' `ts`: RFC 3339 UTC with milliseconds.
std::string timestamp();
Level parse_level(std::string_view text);
bool enabled(Level level);

// An event line: {"ts","level","msg",...fields}.
void event(Level level, std::string_view msg, const nlohmann::json& fields);
void event(Level level, std::string_view msg);
// An access-log line: {"ts","type":"access",...fields}.
void access(const nlohmann::json& fields);

inline void info(std::string_view msg) {
  event(Level::info, msg);
}
inline void warn(std::string_view msg) {
  event(Level::warn, msg);
}
inline void error(std::string_view msg) {
  event(Level::error, msg);
}

}  // namespace gw::log
