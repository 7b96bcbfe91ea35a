#include <algorithm>
#include <array>

#include <boost/url/parse.hpp>

#include "gateway/config/sections.hpp"
#include "gateway/config/url.hpp"

namespace gw {

namespace {

constexpr std::array<std::string_view, 5> kEvents{"needs_reauth", "degraded", "recovered",
                                                  "connected", "deleted"};

}  // namespace

bool NotifyConfig::wants(std::string_view event) const {
  return !url.empty() &&
         (events.empty() || std::find(events.begin(), events.end(), event) != events.end());
}

void read_redis(YamlReader& reader, const YAML::Node& r, const std::filesystem::path& base,
                RedisConfig& out) {
  const std::string k = "store.redis";
  if (!r || !reader.check_keys(r, k, {"url", "prefix", "password", "lock_lease", "tls"})) return;
  reader.get(r, k, "url", out.url);
  reader.get(r, k, "prefix", out.prefix);
  reader.get(r, k, "password", out.password);
  reader.get_duration(r, k, "lock_lease", out.lock_lease);
  if (out.lock_lease.count() != 0 && out.lock_lease < Millis(300))
    reader.problem(r["lock_lease"], "store.redis.lock_lease", "must be at least 300ms");
  auto u = boost::urls::parse_uri(out.url);
  if (!u || (u->scheme() != "redis" && u->scheme() != "rediss") || u->host().empty())
    reader.problem(r["url"] ? r["url"] : r, "store.redis.url",
                   "must look like redis://host:6379/0 or rediss://user@host:6380/0");
  auto t = r["tls"];
  if (!t || !reader.check_keys(t, "store.redis.tls", {"ca_file", "cert_file", "key_file"})) return;
  auto file = [&](const char* key, std::string& value) {
    if (reader.get(t, "store.redis.tls", key, value) && std::filesystem::path(value).is_relative())
      value = (base / value).string();
  };
  file("ca_file", out.tls.ca_file);
  file("cert_file", out.tls.cert_file);
  file("key_file", out.tls.key_file);
  if (out.tls.cert_file.empty() != out.tls.key_file.empty())
    reader.problem(t, "store.redis.tls", "cert_file and key_file go together");
  if (u && u->scheme() != "rediss") reader.problem(t, "store.redis.tls", "is for rediss:// urls");
}

void read_notify(YamlReader& reader, const YAML::Node& n, NotifyConfig& out) {
  if (!n) return;
  const std::string k = "notify";
  if (!reader.check_keys(n, k, {"url", "secret", "events"})) return;
  if (!reader.get(n, k, "url", out.url)) {
    reader.problem(n, "notify.url", "is required");
  } else {
    auto u = boost::urls::parse_absolute_uri(out.url);
    bool https = u && u->scheme() == "https" && !u->host().empty();
    if (!https && !is_loopback_http(out.url))
      reader.problem(n["url"], "notify.url",
                     "must be https://, or http:// to a loopback address (127.0.0.1, [::1], "
                     "localhost)");
  }
  if (!reader.get(n, k, "secret", out.secret) || out.secret.empty())
    reader.problem(n["secret"] ? n["secret"] : n, "notify.secret",
                   "is required: every event is signed with it (X-Gateway-Signature)");
  if (reader.get_list(n, k, "events", out.events)) {
    for (std::size_t i = 0; i < out.events.size(); ++i)
      if (std::find(kEvents.begin(), kEvents.end(), out.events[i]) == kEvents.end())
        reader.problem(n["events"][i], k + ".events[" + std::to_string(i) + "]",
                       reader.shown(n["events"][i], out.events[i]) +
                           " is not an event (needs_reauth, degraded, recovered, connected, "
                           "deleted)");
  }
}

}  // namespace gw
