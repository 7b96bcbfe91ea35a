#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gateway/policy/policy.hpp"
#include "gateway/proxy/router.hpp"
#include "tests/unit/support/temp_dir.hpp"

using namespace gw;
using gw::test::kPolicies;
using gw::test::TempDir;
namespace fs = std::filesystem;
namespace http = boost::beast::http;

namespace {

// chime: a default connection and an allow list; zd: two connections, no default; chip: one
// connection, its token injected as a query parameter.
std::shared_ptr<const Routes> test_routes() {
  TempDir dir;
  auto file = dir.write("gateway.yaml", "store: {kind: memory}\npolicies: [" + kPolicies.string() +
                                            "]\n"
                                            "integrations:\n"
                                            "  - name: chime\n"
                                            "    policy: chime\n"
                                            "    default_connection: acme\n"
                                            "    allow:\n"
                                            "      - methods: [GET]\n"
                                            "        paths: [/v1/leads, /v1/leads/*]\n"
                                            "  - name: zd\n"
                                            "    policy: zendesk-chat\n"
                                            "  - name: chip\n"
                                            "    policy: chip\n"
                                            "connections:\n"
                                            "  - id: acme\n"
                                            "    integration: chime\n"
                                            "    grant: static\n"
                                            "    credentials: {access_token: t}\n"
                                            "  - id: acme-other\n"
                                            "    integration: chime\n"
                                            "    grant: static\n"
                                            "    credentials: {access_token: t}\n"
                                            "  - id: zd-a\n"
                                            "    integration: zd\n"
                                            "    vars: {subdomain: a}\n"
                                            "    grant: static\n"
                                            "    credentials: {access_token: t}\n"
                                            "  - id: zd-b\n"
                                            "    integration: zd\n"
                                            "    vars: {subdomain: b}\n"
                                            "    grant: static\n"
                                            "    credentials: {access_token: t}\n"
                                            "  - id: savings\n"
                                            "    integration: chip\n"
                                            "    grant: static\n"
                                            "    credentials: {access_token: t}\n");
  auto cfg = load_config(file);
  return build_routes(cfg, load_policies(cfg.policy_dirs));
}

const Routes& routes() {
  static const auto r = test_routes();
  return *r;
}

RouteRequest request(http::verb method, std::string_view target, std::string_view connection = "") {
  RouteRequest r;
  r.method = method;
  r.method_string = http::to_string(method);
  r.target = target;
  r.connection = connection;
  return r;
}

// Routes `req` as the session does, with ex.method set from it.
Routed route_of(const RouteRequest& req, Exchange& ex) {
  ex.method = std::string(req.method_string);
  ex.path = std::string(req.target);
  return route(req, routes(), ex);
}

void check_refused(const Routed& r, http::status status, std::string_view code) {
  CHECK_FALSE(r.connection);
  CHECK(r.status == status);
  CHECK(r.code == code);
  CHECK_FALSE(r.message.empty());
}

}  // namespace

TEST_CASE("router: a request finds its integration and connection") {
  Exchange ex;
  auto r = route_of(request(http::verb::get, "/chime/v1/leads/7?x=1"), ex);
  REQUIRE(r.connection);
  CHECK(r.connection->id == "acme");  // the default connection
  CHECK(r.integration->config.name == "chime");
  CHECK(r.split->path == "/v1/leads/7");
  CHECK(r.split->query == "x=1");
  CHECK(r.status == http::status::ok);
  CHECK(ex.integration == "chime");
  CHECK(ex.connection == "acme");
  CHECK(ex.path == "/chime/v1/leads/7?x=1");

  auto named = route_of(request(http::verb::get, "/chime/v1/leads", "acme-other"), ex);
  REQUIRE(named.connection);
  CHECK(named.connection->id == "acme-other");
  CHECK(ex.connection == "acme-other");

  auto only = route_of(request(http::verb::post, "/chip/v1/savings"), ex);
  REQUIRE(only.connection);
  CHECK(only.connection->id == "savings");  // the integration's only connection
}

TEST_CASE("router: the access log's path has injected query parameters redacted") {
  Exchange ex;
  auto r = route_of(request(http::verb::get, "/chip/v1/savings?access_token=secret&page=2"), ex);
  REQUIRE(r.connection);
  CHECK(ex.path.find("secret") == std::string::npos);
  CHECK(ex.path.find("page=2") != std::string::npos);
}

TEST_CASE("router: no_route") {
  Exchange ex;
  auto r = route_of(request(http::verb::get, "/nope/v1/x"), ex);
  check_refused(r, http::status::not_found, "no_route");
  CHECK(r.message == "no integration named \"nope\"");
  CHECK_FALSE(r.close);
  CHECK(ex.integration.empty());
}

TEST_CASE("router: unknown_connection, also one of another integration") {
  Exchange ex;
  auto r = route_of(request(http::verb::get, "/chime/v1/leads", "nobody"), ex);
  check_refused(r, http::status::not_found, "unknown_connection");
  CHECK(r.message == "integration chime has no connection \"nobody\"");
  CHECK(ex.integration == "chime");
  auto other = route_of(request(http::verb::get, "/chime/v1/leads", "zd-a"), ex);
  check_refused(other, http::status::not_found, "unknown_connection");
  CHECK(other.message == "integration chime has no connection \"zd-a\"");
}

TEST_CASE("router: connection_required") {
  Exchange ex;
  auto r = route_of(request(http::verb::get, "/zd/v2/chats"), ex);
  check_refused(r, http::status::bad_request, "connection_required");
  CHECK(r.message == "choose a connection of zd with the X-Gateway-Connection header");
  auto named = route_of(request(http::verb::get, "/zd/v2/chats", "zd-b"), ex);
  REQUIRE(named.connection);
  CHECK(named.connection->id == "zd-b");
}

TEST_CASE("router: forbidden by the allow list") {
  Exchange ex;
  auto path = route_of(request(http::verb::get, "/chime/v1/leads/7/notes"), ex);
  check_refused(path, http::status::forbidden, "forbidden");
  CHECK(path.message == "GET /v1/leads/7/notes is outside the allow list of chime");
  auto method = route_of(request(http::verb::delete_, "/chime/v1/leads/7"), ex);
  check_refused(method, http::status::forbidden, "forbidden");
  CHECK(method.message == "DELETE /v1/leads/7 is outside the allow list of chime");
  CHECK(ex.connection == "acme");
}

TEST_CASE("router: forbidden by allow_from") {
  Exchange ex;
  auto req = request(http::verb::get, "/chime/v1/leads");
  req.peer_allowed = false;
  auto r = route_of(req, ex);
  check_refused(r, http::status::forbidden, "forbidden");
  CHECK(r.message == "caller address not allowed");

  auto cidrs = [](std::initializer_list<const char*> texts) {
    std::vector<Cidr> out;
    for (const char* t : texts) out.push_back(*parse_cidr(t));
    return out;
  };
  auto addr = [](const char* text) { return boost::asio::ip::make_address(text); };
  CHECK(peer_allowed({}, addr("203.0.113.9")));
  auto allow = cidrs({"10.0.0.0/8", "::1/128"});
  CHECK(peer_allowed(allow, addr("10.1.2.3")));
  CHECK_FALSE(peer_allowed(allow, addr("11.1.2.3")));
  CHECK(peer_allowed(allow, addr("::ffff:10.1.2.3")));  // IPv4-mapped: matched as IPv4
  CHECK_FALSE(peer_allowed(allow, addr("::ffff:11.1.2.3")));
  CHECK(peer_allowed(allow, addr("::1")));
  CHECK_FALSE(peer_allowed(allow, addr("::2")));
  CHECK_FALSE(peer_allowed(allow, addr("127.0.0.1")));
}

TEST_CASE("router: shutting_down comes first") {
  Exchange ex;
  auto req = request(http::verb::connect, "/nope");
  req.draining = true;
  req.peer_allowed = false;
  req.framing_problem = "both Content-Length and Transfer-Encoding";
  auto r = route_of(req, ex);
  check_refused(r, http::status::service_unavailable, "shutting_down");
  CHECK(r.message == "the gateway is shutting down");
  CHECK_FALSE(r.close);
}

TEST_CASE("router: CONNECT, TRACE, ambiguous framing and bad targets") {
  Exchange ex;
  auto connect = route_of(request(http::verb::connect, "/chime/v1/leads"), ex);
  check_refused(connect, http::status::bad_request, "bad_request");
  CHECK(connect.message == "CONNECT is not supported");
  auto trace = route_of(request(http::verb::trace, "/chime/v1/leads"), ex);
  check_refused(trace, http::status::bad_request, "bad_request");
  CHECK(trace.message == "TRACE is not supported");

  auto req = request(http::verb::post, "/chime/v1/leads");
  req.framing_problem = "more than one Content-Length header";
  auto framing = route_of(req, ex);
  check_refused(framing, http::status::bad_request, "bad_request");
  CHECK(framing.message == "more than one Content-Length header");
  CHECK(framing.close);  // the body is unread: the connection ends

  auto bad = route_of(request(http::verb::get, "/chime/../admin"), ex);
  check_refused(bad, http::status::bad_request, "bad_request");
  CHECK_FALSE(bad.close);
  CHECK(ex.path.empty());
}
