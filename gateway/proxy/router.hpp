// Where a caller's request goes, or why it goes nowhere: the checks before a credential is
// fetched, and the integration and connection the request names. Plain values in, so unit
// tests reach every refusal without a socket.
#pragma once
#include <boost/asio/ip/address.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/verb.hpp>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/config/config.hpp"
#include "gateway/proxy/exchange.hpp"
#include "gateway/proxy/request_rules.hpp"
#include "gateway/proxy/routes.hpp"

namespace gw {

// What routing reads of a request, each value as the session has it.
struct RouteRequest {
  bool draining = false;     // the gateway is shutting down
  bool peer_allowed = true;  // the caller's address passes listen.allow_from (peer_allowed)
  boost::beast::http::verb method = boost::beast::http::verb::unknown;
  std::string_view method_string;    // as the caller spelled it
  std::string_view target;           // the request target, as sent
  std::string_view connection;       // the X-Gateway-Connection header, empty when absent
  std::string_view framing_problem;  // framing_problem() of the request, empty when none
};

// Where a request goes, or why it goes nowhere.
struct Routed {
  const Integration* integration = nullptr;  // one of the Routes' (which must outlive it)
  std::shared_ptr<Connection> connection;    // set when the request may go on
  std::optional<SplitTarget> split;
  // When refused: the answer, and whether the connection must end after it.
  boost::beast::http::status status = boost::beast::http::status::ok;
  std::string_view code;
  std::string message;
  bool close = false;
};

// Whether a caller at `peer` may use the proxy: any when `allow_from` is empty, else one
// whose address (an IPv4-mapped IPv6 one as IPv4) is in one of its ranges.
bool peer_allowed(const std::vector<Cidr>& allow_from, const boost::asio::ip::address& peer);

// Checks the request and finds its integration and connection in `routes`. Sets what the
// access log says of where it went in `ex` (integration, connection, the path with injected
// query names redacted); reads ex.method. Not a coroutine: each refusal's temporaries would
// otherwise take their own room in every request's frame.
Routed route(const RouteRequest& req, const Routes& routes, Exchange& ex);

}  // namespace gw
