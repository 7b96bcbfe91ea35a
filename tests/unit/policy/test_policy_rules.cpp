// The loader rules of SPEC 3 and 4 that issue 16's interop tries broke: each a configuration
// error naming file:line: key, at --check, not a failure after the user consented.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gateway/auth/crypto.hpp"
#include "gateway/auth/oauth.hpp"
#include "gateway/config/config.hpp"
#include "gateway/config/url.hpp"
#include "gateway/policy/policy.hpp"
#include "gateway/proxy/routes.hpp"

using namespace gw;
namespace fs = std::filesystem;

namespace {

// Loads one policy file of `text`; returns its problems (empty when it loads).
std::vector<std::string> policy_problems(const std::string& text) {
  char tmpl[] = "/tmp/gwpol-XXXXXX";
  fs::path dir = mkdtemp(tmpl);
  std::ofstream(dir / "p.yaml") << text;
  std::vector<std::string> out;
  try {
    load_policies({dir});
  } catch (const ConfigError& e) {
    out = e.problems();
  }
  fs::remove_all(dir);
  return out;
}

bool any_has(const std::vector<std::string>& problems, std::string_view needle) {
  for (const auto& p : problems)
    if (p.find(needle) != std::string::npos) return true;
  return false;
}

const std::string kInject =
    "inject:\n  header: {name: Authorization, value: 'Bearer {access_token}'}\n";

}  // namespace

TEST_CASE("a URL that starts with or contains an unpatterned placeholder is refused") {
  auto p = policy_problems("name: p\nupstream: '{instance_url}/services/data'\n" + kInject);
  CHECK(any_has(p, "p.yaml:2: upstream: placeholder {instance_url} in the host"));
  p = policy_problems("name: p\nupstream: 'https://{sub}.example.com'\n" + kInject);
  CHECK(any_has(p, "placeholder {sub} in the host"));
  // With a pattern both forms load.
  CHECK(policy_problems("name: p\nvars:\n  instance_url: {pattern: '^https://[a-z0-9-]{1,40}"
                        "[.]my[.]salesforce[.]com$'}\nupstream: '{instance_url}/services/data'\n" +
                        kInject)
            .empty());
  // A placeholder after the host (in the path) needs no pattern.
  CHECK(
      policy_problems("name: p\nupstream: 'https://api.example.com/{tenant}'\n" + kInject).empty());
}

TEST_CASE("vendor URLs are https; only an authorize URL may be http, to loopback") {
  auto oauth = [](const std::string& token_url, const std::string& authorize_url) {
    return "name: p\nupstream: https://api.example.com\noauth:\n  authorize:\n    url: " +
           authorize_url + "\n    params: {state: '{state}'}\n  token: {url: '" + token_url +
           "'}\n  grants: {authorization_code: {}}\n" + kInject;
  };
  CHECK(any_has(policy_problems(oauth("http://api.example.com/token", "https://a.example.com")),
                "oauth.token.url: must be an https URL"));
  CHECK(policy_problems(oauth("https://api.example.com/token", "http://127.0.0.1:8/auth")).empty());
  CHECK(any_has(policy_problems(oauth("https://api.example.com/token", "http://evil.example/a")),
                "oauth.authorize.url: must be an https URL"));
}

TEST_CASE("state: param needs {state}; gateway-set names are not grant params") {
  auto p = policy_problems(
      "name: p\nupstream: https://api.example.com\noauth:\n  authorize:\n"
      "    url: https://a.example.com\n    params: {client_id: '{client_id}'}\n    state: param\n"
      "  token: {url: 'https://a.example.com/t'}\n  grants:\n"
      "    authorization_code: {params: {redirect_uri: x, code: y}}\n"
      "    client_credentials: {params: {grant_type: account_credentials}}\n" +
      kInject);
  CHECK(any_has(p, "oauth.authorize.params: state: param needs \"{state}\""));
  CHECK(any_has(p, "oauth.grants.authorization_code.params.redirect_uri: is set by the gateway"));
  CHECK(any_has(p, "oauth.grants.authorization_code.params.code: is set by the gateway"));
  CHECK(any_has(p, "params.grant_type: is set by the gateway; write grant_type: beside params"));
}

TEST_CASE("a grant that sends another grant_type says so; basic client auth is RFC 6749 2.3.1") {
  char tmpl[] = "/tmp/gwpol-XXXXXX";
  fs::path dir = mkdtemp(tmpl);
  std::ofstream(dir / "p.yaml")
      << "name: p\nupstream: https://api.example.com\noauth:\n"
         "  token: {url: 'https://a.example.com/t', client_auth: basic}\n  grants:\n"
         "    client_credentials: {grant_type: account_credentials, params: {scope: all}}\n"
         "    password: {client_auth: basic_raw}\n"
      << kInject;
  auto policies = load_policies({dir});
  fs::remove_all(dir);
  Integration integ;
  integ.policy = policies.at("p");
  integ.config.client_id = "my id";
  integ.config.client_secret = "s3:c%r+t";
  Connection c;
  c.id = "x";
  REQUIRE(prepare_connection(c, integ, {}) == "");
  std::string error;
  auto r = build_token_request(c, {}, "client_credentials", {}, &error);
  REQUIRE(r);
  CHECK(r->body == "grant_type=account_credentials&scope=all");
  // Form-encoded first, then base64: a ':' '%' '+' or space in the secret survives.
  CHECK(r->headers.front().second == "Basic " + crypto::base64("my+id:s3%3Ac%25r%2Bt"));
  r = build_token_request(c, {}, "password", {}, &error);
  REQUIRE(r);
  CHECK(r->headers.front().second == "Basic " + crypto::base64("my id:s3:c%r+t"));
}

TEST_CASE("an http:// override is refused at --check") {
  char tmpl[] = "/tmp/gwcfg-XXXXXX";
  fs::path dir = mkdtemp(tmpl);
  std::ofstream(dir / "gateway.yaml")
      << "store: {kind: memory}\nintegrations:\n  - name: c\n    policy: chime\n"
         "    overrides:\n      token_url: http://127.0.0.1:9/token\n"
         "      authorize_url: http://127.0.0.1:9/authorize\n";
  std::vector<std::string> problems;
  try {
    load_config(dir / "gateway.yaml");
  } catch (const ConfigError& e) {
    problems = e.problems();
  }
  fs::remove_all(dir);
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].find("gateway.yaml:6: integrations[0].overrides.token_url:") == 0);
  CHECK(problems[0].find("https") != std::string::npos);
}

TEST_CASE("loopback means exactly this machine") {
  for (const char* yes :
       {"127.0.0.1", "127.0.0.1:8080", "localhost", "localhost:9", "[::1]", "[::1]:443"})
    CHECK(is_loopback_authority(yes));
  for (const char* no : {"127.0.0.1.evil.example", "localhost.evil.example", "localhost:x",
                         "[::1].evil", "evil.example", ""})
    CHECK_FALSE(is_loopback_authority(no));
  CHECK(is_loopback_http("http://localhost:9090/oauth/authorize"));
  CHECK_FALSE(is_loopback_http("http://localhost.evil.example/authorize"));
  CHECK_FALSE(is_loopback_http("https://localhost/authorize"));
}

TEST_CASE("pkce: S256 by default, none on request, and the gateway sets the challenge") {
  auto policy = [](const std::string& authorize_extra) {
    return "name: p\nupstream: https://api.example.com\noauth:\n  authorize:\n"
           "    url: https://a.example.com\n" +
           authorize_extra +
           "  token: {url: 'https://a.example.com/t'}\n  grants: {authorization_code: {}}\n" +
           kInject;
  };
  CHECK(policy_problems(policy("    params: {state: '{state}'}\n")).empty());
  CHECK(policy_problems(policy("    params: {state: '{state}'}\n    pkce: none\n")).empty());
  CHECK(any_has(policy_problems(policy("    params: {state: '{state}'}\n    pkce: plain\n")),
                "oauth.authorize.pkce: must be S256 or none"));
  CHECK(any_has(policy_problems(policy("    params: {state: '{state}', code_challenge: x}\n")),
                "oauth.authorize.params.code_challenge: is set by the gateway (pkce: S256)"));
}

TEST_CASE("PKCE S256: RFC 7636 appendix B, and fresh verifiers") {
  CHECK(crypto::pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") ==
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
  auto v = crypto::pkce_verifier();
  CHECK(v.size() == 43);
  CHECK(v.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
        std::string::npos);
  CHECK(v != crypto::pkce_verifier());
}

TEST_CASE("token.body and token.headers: json only with POST, the gateway's own headers refused") {
  auto policy = [](const std::string& token_extra) {
    return "name: p\nupstream: https://api.example.com\noauth:\n  token:\n"
           "    url: https://a.example.com/t\n" +
           token_extra + "  grants: {client_credentials: {}}\n" + kInject;
  };
  CHECK(policy_problems(policy("    body: json\n    headers: {X-Api-Key: '{api_key}'}\n")).empty());
  CHECK(any_has(policy_problems(policy("    body: xml\n")),
                "oauth.token.body: must be form or json"));
  CHECK(any_has(policy_problems(policy("    method: GET\n    body: json\n")),
                "oauth.token.body: json needs method: POST"));
  CHECK(any_has(policy_problems(policy("    headers: {Content-Type: text/plain}\n")),
                "oauth.token.headers.Content-Type: is set by the gateway"));
  CHECK(any_has(policy_problems(policy("    headers: {'bad name': x}\n")),
                "oauth.token.headers.bad name: is not a header name"));
}

TEST_CASE("token_response: dot paths and a unit") {
  auto policy = [](const std::string& map) {
    return "name: p\nupstream: https://api.example.com\noauth:\n  token: {url: "
           "'https://a.example.com/t'}\n  grants: {client_credentials: {}}\n  token_response:\n" +
           map + kInject;
  };
  CHECK(policy_problems(policy("    access_token: authed_user.access_token\n"
                               "    expires_in_unit: ms\n    error: error\n"))
            .empty());
  CHECK(any_has(policy_problems(policy("    access_token: 'a..b'\n")),
                "oauth.token_response.access_token: must be a dot path"));
  CHECK(any_has(policy_problems(policy("    expires_in_unit: h\n")),
                "oauth.token_response.expires_in_unit: must be s or ms"));
}
