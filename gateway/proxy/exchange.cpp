#include "gateway/proxy/exchange.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <random>

#include "gateway/observability/log.hpp"
#include "gateway/observability/metrics.hpp"

namespace gw {

std::string new_request_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char hex[] = "0123456789abcdef";
  std::string id(24, '0');
  for (std::size_t i = 0; i < id.size(); i += 16) {
    auto v = rng();
    for (std::size_t j = i; j < std::min(id.size(), i + 16); ++j, v >>= 4) id[j] = hex[v & 15];
  }
  return id;
}

bool usable_request_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id)
    if (c < 0x21 || c > 0x7e) return false;
  return true;
}

std::string_view traceparent_trace_id(std::string_view tp) {
  // version "-" trace-id "-" parent-id "-" flags; a future version may append "-..." fields.
  if (tp.size() < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-') return {};
  if (tp.size() > 55 && tp[55] != '-') return {};
  auto hex = [](std::string_view s) {
    for (char c : s)
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    return true;
  };
  auto version = tp.substr(0, 2), id = tp.substr(3, 32), parent = tp.substr(36, 16),
       flags = tp.substr(53, 2);
  if (!hex(version) || version == "ff" || !hex(id) || !hex(parent) || !hex(flags)) return {};
  if (version == "00" && tp.size() != 55) return {};
  if (id == std::string_view("00000000000000000000000000000000") ||
      parent == std::string_view("0000000000000000"))
    return {};
  return id;
}

void finish(const Exchange& ex, bool access_log) {
  metrics::request_done(ex.integration.empty() ? "none" : ex.integration, ex.method, ex.status,
                        ms_since(ex.start) / 1000);
  if (!access_log) return;
  nlohmann::json line = {{"request_id", ex.request_id},
                         {"integration", ex.integration},
                         {"connection", ex.connection},
                         {"method", ex.method},
                         {"path", ex.path},
                         {"status", ex.status},
                         {"upstream_status", ex.upstream_status},
                         {"duration_ms", std::round(ms_since(ex.start) * 1000) / 1000},
                         {"upstream_ms", std::round(ex.upstream_ms * 1000) / 1000},
                         {"retried", ex.retried},
                         {"bytes_in", ex.bytes_in},
                         {"bytes_out", ex.bytes_out}};
  if (!ex.trace_id.empty()) line["trace_id"] = ex.trace_id;
  log::access(line);
}

}  // namespace gw
