#include "gateway/config/url.hpp"

#include <boost/url/parse.hpp>

namespace gw {

std::string parse_upstream(const std::string& url, UpstreamTarget& out) {
  auto parsed = boost::urls::parse_absolute_uri(url);
  if (!parsed) return "\"" + url + "\" is not an absolute URL";
  const auto& u = *parsed;
  if (u.scheme() != "https") return "\"" + url + "\" must use https";
  if (u.has_userinfo() || u.has_query() || u.has_fragment())
    return "\"" + url + "\" must have no user, query or fragment";
  auto host_type = u.host_type();
  out.ip_literal =
      host_type == boost::urls::host_type::ipv4 || host_type == boost::urls::host_type::ipv6;
  if (host_type == boost::urls::host_type::ipv6) {
    out.host = std::string(u.host_address());
  } else if (host_type == boost::urls::host_type::ipv4 ||
             host_type == boost::urls::host_type::name) {
    out.host = std::string(u.host());
  } else {
    return "\"" + url + "\" has no usable host";
  }
  if (out.host.empty()) return "\"" + url + "\" has no host";
  out.port = u.has_port() ? std::string(u.port()) : "443";
  out.host_header = std::string(u.encoded_host_and_port());
  std::string path(u.encoded_path());
  while (!path.empty() && path.back() == '/') path.pop_back();
  out.base_path = path;
  return "";
}

bool is_loopback_authority(std::string_view authority) {
  auto colon = authority.rfind(':');
  if (colon != std::string_view::npos && authority.find(']', colon) == std::string_view::npos) {
    auto port = authority.substr(colon + 1);
    if (port.empty() || port.find_first_not_of("0123456789") != std::string_view::npos)
      return false;
    authority = authority.substr(0, colon);
  }
  return authority == "127.0.0.1" || authority == "localhost" || authority == "[::1]";
}

bool is_loopback_http(std::string_view url) {
  constexpr std::string_view scheme = "http://";
  if (url.substr(0, scheme.size()) != scheme) return false;
  auto rest = url.substr(scheme.size());
  return is_loopback_authority(rest.substr(0, rest.find_first_of("/?#")));
}

}  // namespace gw
