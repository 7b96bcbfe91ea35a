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

}  // namespace gw
