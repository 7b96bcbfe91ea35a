#include "gateway/observability/metrics.hpp"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <charconv>
#include <mutex>
#include <tuple>
#include <unordered_map>

namespace gw::metrics {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

const prometheus::Histogram::BucketBoundaries kLatency{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                       0.25,  0.5,    1,     2.5,  5,     10,   30};

struct Registry {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  prometheus::Family<prometheus::Counter>& requests =
      BuildCounter()
          .Name("gateway_requests_total")
          .Help("Requests answered, by integration, method and status code")
          .Register(*registry);
  prometheus::Family<prometheus::Histogram>& request_duration =
      BuildHistogram()
          .Name("gateway_request_duration_seconds")
          .Help("Time from request head to the end of the answer")
          .Register(*registry);
  prometheus::Family<prometheus::Histogram>& upstream_duration =
      BuildHistogram()
          .Name("gateway_upstream_duration_seconds")
          .Help("Time from sending upstream to the vendor's response head")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& auth_retries =
      BuildCounter()
          .Name("gateway_auth_retries_total")
          .Help("Vendor token rejections and what followed")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& upstream_retries =
      BuildCounter()
          .Name("gateway_upstream_retries_total")
          .Help("Requests sent again on a fresh vendor connection, by reason")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& rate_limited =
      BuildCounter()
          .Name("gateway_rate_limited_total")
          .Help("Requests during a vendor's cool-down, answered by the gateway or observed")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& handshakes =
      BuildCounter()
          .Name("gateway_upstream_handshakes_total")
          .Help("TLS handshakes with vendors, by whether a saved session was resumed")
          .Register(*registry);
  prometheus::Counter& handshakes_resumed = handshakes.Add({{"resumed", "true"}});
  prometheus::Counter& handshakes_full = handshakes.Add({{"resumed", "false"}});
  prometheus::Family<prometheus::Counter>& refreshes =
      BuildCounter()
          .Name("gateway_token_refreshes_total")
          .Help("Token requests, by trigger and result")
          .Register(*registry);
  prometheus::Family<prometheus::Histogram>& refresh_duration =
      BuildHistogram()
          .Name("gateway_token_refresh_duration_seconds")
          .Help("Token endpoint round trips")
          .Register(*registry);
  prometheus::Family<prometheus::Gauge>& connections =
      BuildGauge()
          .Name("gateway_connections")
          .Help("Vendor connections, by integration and state")
          .Register(*registry);
  prometheus::Family<prometheus::Gauge>& inflight = BuildGauge()
                                                        .Name("gateway_inflight_requests")
                                                        .Help("Requests being served")
                                                        .Register(*registry);
  prometheus::Family<prometheus::Gauge>& downstream = BuildGauge()
                                                          .Name("gateway_downstream_connections")
                                                          .Help("Open caller connections")
                                                          .Register(*registry);
  prometheus::Family<prometheus::Gauge>& upstream = BuildGauge()
                                                        .Name("gateway_upstream_connections")
                                                        .Help("Vendor connections, idle or busy")
                                                        .Register(*registry);
  prometheus::Family<prometheus::Counter>& store_ops = BuildCounter()
                                                           .Name("gateway_store_operations_total")
                                                           .Help("Token store operations")
                                                           .Register(*registry);
  prometheus::Family<prometheus::Counter>& reloads = BuildCounter()
                                                         .Name("gateway_config_reloads_total")
                                                         .Help("Configuration reloads")
                                                         .Register(*registry);
  prometheus::Family<prometheus::Counter>& notifications =
      BuildCounter()
          .Name("gateway_notifications_total")
          .Help("Connection health events sent to notify.url")
          .Register(*registry);
  prometheus::Family<prometheus::Gauge>& store_pending =
      BuildGauge()
          .Name("gateway_store_pending_records")
          .Help("Token records the store has not taken yet (retried)")
          .Register(*registry);
  prometheus::Family<prometheus::Gauge>& build_info = BuildGauge()
                                                          .Name("gateway_build_info")
                                                          .Help("Always 1; the version as a label")
                                                          .Register(*registry);

  Registry() {
    build_info.Add({{"version", GATEWAY_VERSION}}).Set(1);
    for (const char* op : {"load", "save", "remove"})
      for (const char* result : {"ok", "error"}) store_ops.Add({{"op", op}, {"result", result}});
    for (const char* result : {"ok", "error"}) reloads.Add({{"result", result}});
  }
};

Registry& reg() {
  static Registry r;
  return r;
}

// prometheus-cpp's Family::Add locks and hashes the labels; the request path instead keeps
// a per-thread cache of the series it has used, looked up by a key built in a per-thread
// buffer, so a hit allocates nothing. The labels are built only on a miss.
template <typename Metric, typename MakeLabels, typename... Args>
Metric& cached(prometheus::Family<Metric>& family, const std::string& key, MakeLabels make_labels,
               Args&&... args) {
  thread_local std::unordered_map<const void*, std::unordered_map<std::string, Metric*>> cache;
  auto& per_family = cache[&family];
  auto it = per_family.find(key);
  if (it != per_family.end()) return *it->second;
  Metric& m = family.Add(make_labels(), std::forward<Args>(args)...);
  per_family.emplace(key, &m);
  return m;
}

// "a\nb\nc" in a reused per-thread buffer.
const std::string& series_key(std::string_view a, std::string_view b = {},
                              std::string_view c = {}) {
  thread_local std::string key;
  key.assign(a);
  key += '\n';
  key.append(b);
  key += '\n';
  key.append(c);
  return key;
}

const char* retry_name(RetryResult r) {
  switch (r) {
    case RetryResult::replayed:
      return "replayed";
    case RetryResult::rejected_again:
      return "rejected_again";
    case RetryResult::not_replayable:
      return "not_replayable";
    case RetryResult::refresh_failed:
      return "refresh_failed";
  }
  return "replayed";
}

}  // namespace

std::string_view method_label(std::string_view method) {
  // RFC 9110's methods and PATCH; anything else a caller can invent, so one bucket.
  static constexpr std::string_view known[] = {"GET",     "HEAD",    "POST",  "PUT",  "DELETE",
                                               "CONNECT", "OPTIONS", "TRACE", "PATCH"};
  for (auto k : known)
    if (method == k) return k;
  return "other";
}

void request_done(const std::string& integration, std::string_view raw_method, unsigned code,
                  double seconds) {
  auto& r = reg();
  auto method = method_label(raw_method);
  char digits[8];
  auto end = std::to_chars(digits, digits + sizeof digits, code).ptr;
  std::string_view c(digits, static_cast<std::size_t>(end - digits));
  cached(r.requests, series_key(integration, method, c), [&] {
    return prometheus::Labels{
        {"integration", integration}, {"method", std::string(method)}, {"code", std::string(c)}};
  }).Increment();
  cached(
      r.request_duration, integration,
      [&] {
        return prometheus::Labels{{"integration", integration}};
      },
      kLatency)
      .Observe(seconds);
}

void upstream_done(const std::string& integration, double seconds) {
  cached(
      reg().upstream_duration, integration,
      [&] {
        return prometheus::Labels{{"integration", integration}};
      },
      kLatency)
      .Observe(seconds);
}

void auth_retry(const std::string& integration, RetryResult result) {
  std::string_view res = retry_name(result);
  cached(reg().auth_retries, series_key(integration, res), [&] {
    return prometheus::Labels{{"integration", integration}, {"result", std::string(res)}};
  }).Increment();
}

void upstream_stale_retry(const std::string& integration) {
  reg()
      .upstream_retries.Add({{"integration", integration}, {"reason", "stale_connection"}})
      .Increment();
}

void rate_limited(const std::string& integration, std::string_view action) {
  cached(reg().rate_limited, series_key(integration, action), [&] {
    return prometheus::Labels{{"integration", integration}, {"action", std::string(action)}};
  }).Increment();
}

void upstream_handshake(bool resumed) {
  auto& r = reg();
  (resumed ? r.handshakes_resumed : r.handshakes_full).Increment();
}

void token_refresh(const std::string& integration, std::string_view trigger,
                   std::string_view result, double seconds) {
  auto& r = reg();
  r.refreshes
      .Add({{"integration", integration},
            {"trigger", std::string(trigger)},
            {"result", std::string(result)}})
      .Increment();
  r.refresh_duration.Add({{"integration", integration}}, kLatency).Observe(seconds);
}

void store_operation(std::string_view op, bool ok) {
  reg().store_ops.Add({{"op", std::string(op)}, {"result", ok ? "ok" : "error"}}).Increment();
}

void notification(std::string_view event, std::string_view result) {
  reg()
      .notifications.Add({{"event", std::string(event)}, {"result", std::string(result)}})
      .Increment();
}

void config_reload(bool ok) {
  reg().reloads.Add({{"result", ok ? "ok" : "error"}}).Increment();
}

std::string render(const Snapshot& s) {
  auto& r = reg();
  r.inflight.Add({}).Set(s.inflight);
  r.downstream.Add({}).Set(s.downstream_connections);
  r.upstream.Add({{"state", "idle"}}).Set(s.upstream_idle);
  r.upstream.Add({{"state", "busy"}}).Set(s.upstream_busy);
  r.store_pending.Add({}).Set(s.store_pending);
  // Connection gauges are rebuilt each scrape so removed integrations disappear.
  static std::mutex mutex;
  static std::vector<prometheus::Gauge*> previous;
  {
    std::lock_guard lock(mutex);
    for (auto* g : previous) r.connections.Remove(g);
    previous.clear();
    for (const auto& [integration, state, n] : s.connections) {
      auto& g = r.connections.Add({{"integration", integration}, {"state", state}});
      g.Set(n);
      previous.push_back(&g);
    }
    return prometheus::TextSerializer().Serialize(r.registry->Collect());
  }
}

}  // namespace gw::metrics
