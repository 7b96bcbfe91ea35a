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
