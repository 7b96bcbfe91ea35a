#include "gateway/proxy/router.hpp"

#include <algorithm>
#include <array>
#include <cstdint>

namespace gw {

namespace asio = boost::asio;
namespace http = boost::beast::http;

namespace {

Routed refuse(http::status s, std::string_view code, std::string message, bool close = false) {
  Routed r;
  r.status = s;
  r.code = code;
  r.message = std::move(message);
  r.close = close;
  return r;
}

}  // namespace

bool peer_allowed(const std::vector<Cidr>& allow_from, const asio::ip::address& peer) {
  const auto& allow = allow_from;
  if (allow.empty()) return true;
  std::array<std::uint8_t, 16> bytes{};
  auto addr = peer;
  if (addr.is_v6() && addr.to_v6().is_v4_mapped())
    addr = asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6());
  if (addr.is_v4()) {
    auto b = addr.to_v4().to_bytes();
    std::copy(b.begin(), b.end(), bytes.begin());
  } else {
    auto b = addr.to_v6().to_bytes();
    std::copy(b.begin(), b.end(), bytes.begin());
  }
  for (const auto& cidr : allow)
    if (cidr_contains(cidr, bytes, addr.is_v6())) return true;
  return false;
}

Routed route(const RouteRequest& req, const Routes& routes, Exchange& ex) {
  if (req.draining)
    return refuse(http::status::service_unavailable, "shutting_down",
                  "the gateway is shutting down");
  if (!req.peer_allowed)
    return refuse(http::status::forbidden, "forbidden", "caller address not allowed");
  if (req.method == http::verb::connect)
    return refuse(http::status::bad_request, "bad_request", "CONNECT is not supported");
  // A vendor that answers TRACE echoes the request it got, the injected credential in it.
  if (req.method == http::verb::trace)
    return refuse(http::status::bad_request, "bad_request", "TRACE is not supported");
  if (!req.framing_problem.empty()) {
    // Beast accepts identical duplicates and lists; a proxy must not (the framing is
    // ambiguous to whoever parses the message next). The body is unread: the connection ends.
    return refuse(http::status::bad_request, "bad_request", std::string(req.framing_problem), true);
  }
  Routed r;
  std::string why;
  r.split = split_target(req.target, &why);
  if (!r.split) {
    ex.path = "";
    return refuse(http::status::bad_request, "bad_request", why);
  }
  auto iit = routes.integrations.find(r.split->integration);
  if (iit == routes.integrations.end())
    return refuse(http::status::not_found, "no_route",
                  "no integration named \"" + r.split->integration + "\"");
  const Integration& integ = *iit->second;
  r.integration = &integ;
  ex.integration = integ.config.name;
  ex.path = redact_query_params(req.target, integ.injected_query_names);

  if (auto named = req.connection; !named.empty()) {
    auto cit = routes.connections.find(std::string_view(named.data(), named.size()));
    if (cit == routes.connections.end() || cit->second->integration != integ.config.name)
      return refuse(
          http::status::not_found, "unknown_connection",
          "integration " + integ.config.name + " has no connection \"" + std::string(named) + "\"");
    r.connection = cit->second;
  } else if (integ.default_connection) {
    r.connection = integ.default_connection;
  } else if (integ.connections.size() == 1) {
    r.connection = integ.connections.front();
  } else {
    return refuse(
        http::status::bad_request, "connection_required",
        "choose a connection of " + integ.config.name + " with the X-Gateway-Connection header");
  }
  ex.connection = r.connection->id;
  if (integ.config.allow && !allowed(*integ.config.allow, req.method_string, r.split->path))
    return refuse(
        http::status::forbidden, "forbidden",
        ex.method + " " + r.split->path + " is outside the allow list of " + integ.config.name);
  return r;
}

}  // namespace gw
