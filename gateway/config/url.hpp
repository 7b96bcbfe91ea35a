// Vendor URLs as the gateway dials them: parsed with Boost.URL, https only.
#pragma once
#include <string>
#include <string_view>

namespace gw {

// Where a connection's requests go, derived from the policy's upstream URL.
struct UpstreamTarget {
  std::string host;         // for DNS / connect ("::1" without brackets)
  std::string port;         // "443" by default
  std::string host_header;  // Host: value
  std::string base_path;    // "" or "/api/v2" (no trailing slash)
  bool ip_literal = false;
  std::string key() const { return host + ":" + port; }
};

// Parses an https URL into host, port, Host header and base path. "" or an error text.
std::string parse_upstream(const std::string& url, UpstreamTarget& out);

// Whether an authority ("host" or "host:port") is this machine's loopback, exactly:
// 127.0.0.1, localhost or [::1] ("localhost.evil.example" is not).
bool is_loopback_authority(std::string_view authority);
// Whether `url` is http:// to a loopback authority (allowed only for a browser's URL).
bool is_loopback_http(std::string_view url);

}  // namespace gw
