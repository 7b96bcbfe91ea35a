// The gateway's metrics (SPEC section 8), declared in one place behind a small facade so
// prometheus-cpp stays out of every other header. Label values are integration names,
// methods, status codes and fixed words: never a connection id, token or path.
#pragma once
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

namespace gw::metrics {

enum class RetryResult { replayed, rejected_again, not_replayable, refresh_failed };

// The `method` label: a standard method as sent, anything else "other" (a caller can send
// any token as a method, and each new label value is a series kept forever).
std::string_view method_label(std::string_view method);
void request_done(const std::string& integration, std::string_view method, unsigned code,
                  double seconds);
void upstream_done(const std::string& integration, double seconds);
void auth_retry(const std::string& integration, RetryResult result);
// A pooled vendor connection was found closed as it was reused; the request went again.
void upstream_stale_retry(const std::string& integration);
// A request during a vendor's cool-down (SPEC 5.1): action is "enforced" (answered 429 by
// the gateway) or "observed" (sent anyway, rate_limit: observe).
void rate_limited(const std::string& integration, std::string_view action);
// A TLS handshake with a vendor completed, resuming a saved session or not.
void upstream_handshake(bool resumed);
// trigger: ahead | rejected | forced | initial; result: ok | invalid_grant | error
void token_refresh(const std::string& integration, std::string_view trigger,
                   std::string_view result, double seconds);
void store_operation(std::string_view op, bool ok);
// A health event (SPEC 6.10): result is delivered | retried | dropped.
void notification(std::string_view event, std::string_view result);
void config_reload(bool ok);

// Point-in-time values, set just before each scrape.
struct Snapshot {
  double inflight = 0, downstream_connections = 0, upstream_idle = 0, upstream_busy = 0;
  double store_pending = 0;  // records the token store has not taken yet
  // (integration, state) -> count
  std::vector<std::tuple<std::string, std::string, double>> connections;
};
// The Prometheus text exposition of every metric.
std::string render(const Snapshot& snapshot);

}  // namespace gw::metrics
