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

void finish(const Exchange& ex, bool access_log) {
  metrics::request_done(ex.integration.empty() ? "none" : ex.integration, ex.method, ex.status,
                        ms_since(ex.start) / 1000);
  if (!access_log) return;
  log::access({{"request_id", ex.request_id},
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
               {"bytes_out", ex.bytes_out}});
}

}  // namespace gw
