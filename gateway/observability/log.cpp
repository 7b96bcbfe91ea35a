#include "gateway/observability/log.hpp"

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace gw::log {

std::string timestamp() {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

namespace {

std::atomic<int> g_level{static_cast<int>(Level::info)};
std::mutex g_write;

void write_line(const nlohmann::json& j) {
  std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line += '\n';
  std::lock_guard lock(g_write);
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
}

const char* name(Level l) {
  switch (l) {
    case Level::debug:
      return "debug";
    case Level::info:
      return "info";
    case Level::warn:
      return "warn";
    case Level::error:
      return "error";
  }
  return "info";
}

}  // namespace

void set_level(Level level) {
  g_level = static_cast<int>(level);
}

Level parse_level(std::string_view text) {
  if (text == "debug") return Level::debug;
  if (text == "warn") return Level::warn;
  if (text == "error") return Level::error;
  return Level::info;
}

bool enabled(Level level) {
  return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed);
}

void event(Level level, std::string_view msg, const nlohmann::json& fields) {
  if (!enabled(level)) return;
  nlohmann::json j = {{"ts", timestamp()}, {"level", name(level)}, {"msg", msg}};
  if (fields.is_object())
    for (auto it = fields.begin(); it != fields.end(); ++it) j[it.key()] = it.value();
  write_line(j);
}

void event(Level level, std::string_view msg) {
  event(level, msg, nlohmann::json::object());
}

void access(const nlohmann::json& fields) {
  nlohmann::json j = {{"ts", timestamp()}, {"type", "access"}};
  for (auto it = fields.begin(); it != fields.end(); ++it) j[it.key()] = it.value();
  write_line(j);
}

}  // namespace gw::log
