#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "gateway/config/config.hpp"
#include "gateway/policy/policy.hpp"
#include "gateway/policy/template.hpp"
#include "gateway/proxy/routes.hpp"
#include "tests/unit/support/temp_dir.hpp"

using namespace gw;
using gw::test::kPolicies;
using gw::test::TempDir;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> problems_of(const fs::path& file) {
  try {
    load_config(file);
  } catch (const ConfigError& e) {
    return e.problems();
  }
  return {};
}

}  // namespace

TEST_CASE("durations and sizes") {
  CHECK(parse_duration("250ms") == Millis(250));
  CHECK(parse_duration("30s") == Millis(30000));
  CHECK(parse_duration("5m") == Millis(300000));
  CHECK(parse_duration("180d") == Millis(180LL * 86400000));
  CHECK_FALSE(parse_duration("30"));
  CHECK_FALSE(parse_duration("-1s"));
  CHECK_FALSE(parse_duration("1w"));
  CHECK(parse_size("16384") == 16384u);
  CHECK(parse_size("10MiB") == 10u * 1024 * 1024);
  CHECK_FALSE(parse_size("10 MiB"));
  CHECK_FALSE(parse_size("99999999999999999999"));
}

TEST_CASE("templates") {
  std::string err;
  auto t = Template::compile("https://{subdomain}.zendesk.com/x/{id}", &err);
  REQUIRE(t);
  CHECK(t->host_placeholders() == std::vector<std::string>{"subdomain"});
  auto out = t->render([](std::string_view n) -> std::optional<std::string> {
    if (n == "subdomain") return "acme";
    if (n == "id") return "7";
    return std::nullopt;
  });
  CHECK(out == "https://acme.zendesk.com/x/7");
  std::string missing;
  CHECK_FALSE(t->render([](std::string_view) { return std::nullopt; }, &missing));
  CHECK(missing == "subdomain");
  CHECK_FALSE(Template::compile("Bearer {access_token", &err));
  CHECK_FALSE(Template::compile("a}b", &err));
}

TEST_CASE("the shipped policies load and follow their documents") {
  auto policies = load_policies({kPolicies});
  REQUIRE(policies.size() == 6);
  const auto& chime = *policies.at("chime");
  CHECK(chime.oauth->client_auth == ClientAuth::basic);
  CHECK(chime.oauth->authorize.state == StateMode::cookie);
  CHECK(chime.oauth->authorize.params.front().first == "clientId");
  const auto& chip = *policies.at("chip");
  CHECK(chip.oauth->token_method == "GET");
  CHECK(chip.oauth->client_auth == ClientAuth::query);
  CHECK(chip.reauth_on == std::set<unsigned>{419});
  CHECK(chip.inject.kind == InjectKind::query);
  CHECK(chip.inject.name == "access_token");
  CHECK(chip.oauth->refresh_url->source() == "https://api.getchip.tech/oauth/refresh");
  const auto& zendesk = *policies.at("zendesk-chat");
  CHECK(zendesk.oauth->client_auth == ClientAuth::body);
  CHECK(zendesk.oauth->grants.count("client_credentials"));
  CHECK(zendesk.vars.at("subdomain").required);
  const auto& comm100 = *policies.at("comm100");
  CHECK(comm100.oauth->grants.at("password").client_auth == ClientAuth::none);
  CHECK(comm100.oauth->grants.count("client_credentials"));
  CHECK(policies.at("comm100-partner")->oauth->token_url.source() ==
        "https://{oauth_host}/partner/oauth/token");
  CHECK(policies.at("comm100-apikey")->inject.kind == InjectKind::basic);
  CHECK_FALSE(policies.at("comm100-apikey")->oauth);
}

TEST_CASE("config errors name file, line and key") {
  TempDir dir;
  auto file = dir.write("gateway.yaml",
                        "listen:\n  port: 8080\nstore:\n  kind: memory\n"
                        "integratons: []\n"                  // line 5: typo
                        "limits:\n  header_timeout: 10\n");  // line 7: no unit
  auto problems = problems_of(file);
  REQUIRE(problems.size() == 2);
  CHECK(problems[0] == "gateway.yaml:5: integratons: unknown key");
  CHECK(problems[1].rfind("gateway.yaml:7: limits.header_timeout:", 0) == 0);
}

TEST_CASE("redis store: the refresh lock lease") {
  TempDir dir;
  auto ok = dir.write("ok.yaml",
                      "store: {kind: redis, key: k, redis: {url: \"redis://r:6379/2\", "
                      "lock_lease: 2s}}\n");
  CHECK(load_config(ok).store.redis.lock_lease == Millis(2000));
  auto unset = dir.write("unset.yaml", "store: {kind: redis, key: k}\n");
  CHECK(load_config(unset).store.redis.lock_lease == Millis(0));  // twice refresh.timeout
  auto tiny =
      dir.write("tiny.yaml", "store:\n  kind: redis\n  key: k\n  redis:\n    lock_lease: 50ms\n");
  auto problems = problems_of(tiny);
  REQUIRE(problems.size() == 1);
  CHECK(problems[0] == "tiny.yaml:5: store.redis.lock_lease: must be at least 300ms");
}

TEST_CASE("a mapping key that is not a name is a problem, not a crash") {
  // Found by fuzz_policy: yaml-cpp threw BadConversion out of the loader.
  TempDir dir;
  auto file = dir.write("k.yaml", "listen:\n  {a: 1}: 8080\nstore: {kind: memory}\n");
  auto problems = problems_of(file);
  REQUIRE(problems.size() == 1);
  CHECK(problems[0] == "k.yaml:2: listen: keys must be plain names");
}

TEST_CASE("env and file references") {
  TempDir dir;
  dir.write("secret.txt", "s3cret\r\n");
  setenv("GW_UNIT_PORT", "8181", 1);
  auto file = dir.write("g.yaml",
                        "listen: {port: \"${env:GW_UNIT_PORT}\"}\n"
                        "store: {kind: memory, key: \"${file:secret.txt}\"}\n");
  auto cfg = load_config(file);
  CHECK(cfg.listen.port == 8181);
  CHECK(cfg.store.key == "s3cret");
  auto bad = dir.write("b.yaml", "store: {kind: memory, key: \"${env:GW_UNIT_MISSING_VAR}\"}\n");
  auto problems = problems_of(bad);
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].find("GW_UNIT_MISSING_VAR") != std::string::npos);
}

TEST_CASE("a non-loopback listener needs a guard") {
  TempDir dir;
  auto file = dir.write("g.yaml", "listen: {address: 0.0.0.0}\nstore: {kind: memory}\n");
  auto problems = problems_of(file);
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].find("listen.address") != std::string::npos);
  auto ok = dir.write(
      "ok.yaml", "listen: {address: 0.0.0.0, allow_from: [10.0.0.0/8]}\nstore: {kind: memory}\n");
  CHECK(problems_of(ok).empty());
}

TEST_CASE("routes: unknown policy and host placeholder patterns") {
  TempDir dir;
  auto file =
      dir.write("gateway.yaml", "store: {kind: memory}\npolicies: [" + kPolicies.string() +
                                    "]\nintegrations:\n  - name: chime\n    policy: chmie\n"
                                    "  - name: zd\n    policy: zendesk-chat\n"
                                    "connections:\n  - id: a\n    integration: zd\n"
                                    "    vars: {subdomain: \"evil.com/x#\"}\n    grant: static\n"
                                    "    credentials: {access_token: t}\n");
  auto cfg = load_config(file);
  try {
    build_routes(cfg, load_policies(cfg.policy_dirs));
    FAIL("expected a ConfigError");
  } catch (const ConfigError& e) {
    REQUIRE(e.problems().size() == 2);
    CHECK(e.problems()[0] == "gateway.yaml:5: integrations[0].policy: no policy named \"chmie\"");
    CHECK(e.problems()[1].find("subdomain") != std::string::npos);
  }
}

TEST_CASE(
    "routes: connections added in a batch, replaced, removed, or dropped without their "
    "integration") {
  TempDir dir;
  auto file = dir.write("gateway.yaml", "store: {kind: memory}\npolicies: [" + kPolicies.string() +
                                            "]\nintegrations:\n  - name: zd\n    policy: "
                                            "zendesk-chat\n");
  auto cfg = load_config(file);
  auto routes = build_routes(cfg, load_policies(cfg.policy_dirs));
  auto conn = [](std::string id, std::string integration) {
    auto c = std::make_shared<Connection>();
    c->id = std::move(id);
    c->integration = std::move(integration);
    return c;
  };
  auto a = conn("a", "zd"), b = conn("b", "zd"), stray = conn("s", "gone");
  auto out = with_connections(*routes, {a, b, stray});
  CHECK(out->connections.size() == 2);
  CHECK(out->connections.count("s") == 0);
  const auto& zd = *out->integrations.at("zd");
  CHECK(zd.connections.size() == 2);
  CHECK(routes->integrations.at("zd")->connections.empty());  // the original is untouched
  auto b2 = conn("b", "zd");
  auto replaced = with_connection(*out, b2);
  CHECK(replaced->connections.at("b") == b2);
  CHECK(replaced->integrations.at("zd")->connections.size() == 2);
  auto removed = without_connection(*replaced, "b");
  CHECK(removed->connections.size() == 1);
  CHECK(removed->integrations.at("zd")->connections.size() == 1);
}

TEST_CASE("cidr") {
  auto c = parse_cidr("10.0.0.0/8");
  REQUIRE(c);
  CHECK(cidr_contains(*c, {10, 1, 2, 3}, false));
  CHECK_FALSE(cidr_contains(*c, {11, 1, 2, 3}, false));
  CHECK_FALSE(parse_cidr("10.0.0.0/33"));
  CHECK_FALSE(parse_cidr("nonsense"));
  CHECK(parse_cidr("::1/128"));
}

TEST_CASE("a var pattern with huge repeat counts is a clear problem, not undefined behaviour") {
  auto dir = std::filesystem::temp_directory_path() / ("gw-pattern-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto policy_with = [&](const std::string& pattern) {
    std::ofstream(dir / "p.yaml", std::ios::trunc)
        << "name: p\nupstream: https://{site}.example.com\ninject:\n  header: Authorization\n"
           "  value: \"Bearer {access_token}\"\nvars:\n  site:\n    pattern: '"
        << pattern << "'\n";
    return dir;
  };
  // The fuzzer's find: libstdc++ overflowed a signed integer reading this count.
  try {
    load_policies({policy_with("a{2555555555555555555}")});
    FAIL("loaded");
  } catch (const ConfigError& e) {
    bool named = false;
    for (const auto& p : e.problems())
      named = named ||
              p.find("vars.site.pattern: regex a repeat count over 999,999") != std::string::npos;
    CHECK(named);
  }
  CHECK_THROWS_AS(load_policies({policy_with("((a{99}){99}){99}")}), ConfigError);
  CHECK_THROWS_AS(load_policies({policy_with(std::string(300, 'a'))}), ConfigError);
  // Within the limits: no problem about the pattern (the shipped ones use {0,252}).
  try {
    load_policies({policy_with("^[a-z0-9-]{1,63}\\\\.x{2}$")});
  } catch (const ConfigError& e) {
    for (const auto& p : e.problems()) CHECK(p.find("pattern") == std::string::npos);
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("an integration's rate_limit: enforce by default, observe, off, nothing else") {
  TempDir dir;
#define INTEGRATION "store: {kind: memory}\nintegrations:\n  - name: v\n    policy: chime\n"
  auto mode = [&](const char* name, const char* text) {
    return load_config(dir.write(name, text)).integrations[0].rate_limit;
  };
  CHECK(mode("d.yaml", INTEGRATION) == RateLimitMode::enforce);
  CHECK(mode("o.yaml", INTEGRATION "    rate_limit: observe\n") == RateLimitMode::observe);
  CHECK(mode("f.yaml", INTEGRATION "    rate_limit: off\n") == RateLimitMode::off);
  auto problems = problems_of(dir.write("bad.yaml", INTEGRATION "    rate_limit: sometimes\n"));
#undef INTEGRATION
  REQUIRE(problems.size() == 1);
  CHECK(problems[0] == "bad.yaml:5: integrations[0].rate_limit: must be enforce, observe or off");
}

TEST_CASE("notify: https or loopback http, a secret, known events") {
  TempDir dir;
  auto ok = dir.write("ok.yaml",
                      "store: {kind: memory}\nnotify:\n  url: https://hooks.example/gw\n"
                      "  secret: s\n  events: [needs_reauth, recovered]\n");
  auto cfg = load_config(ok);
  CHECK(cfg.notify.wants("needs_reauth"));
  CHECK_FALSE(cfg.notify.wants("deleted"));
  auto all = dir.write("all.yaml",
                       "store: {kind: memory}\nnotify: {url: 'http://127.0.0.1:9/x', secret: s}\n");
  CHECK(load_config(all).notify.wants("deleted"));
  CHECK_FALSE(NotifyConfig{}.wants("deleted"));  // no url: no events
  auto bad = dir.write("bad.yaml",
                       "store: {kind: memory}\nnotify:\n  url: http://hooks.example/gw\n"
                       "  events: [needs_reauth, oops]\n");
  auto problems = problems_of(bad);
  REQUIRE(problems.size() == 3);
  CHECK(problems[0] ==
        "bad.yaml:3: notify.url: must be https://, or http:// to a loopback address (127.0.0.1, "
        "[::1], localhost)");
  CHECK(problems[1] ==
        "bad.yaml:3: notify.secret: is required: every event is signed with it "
        "(X-Gateway-Signature)");
  CHECK(problems[2] ==
        "bad.yaml:4: notify.events[1]: \"oops\" is not an event (needs_reauth, degraded, "
        "recovered, connected, deleted)");
}

TEST_CASE("redis store: rediss://, an ACL user, tls files") {
  TempDir dir;
  auto ok = dir.write("ok.yaml",
                      "store:\n  kind: redis\n  key: k\n  redis:\n"
                      "    url: rediss://gw@10.0.0.5:6380/1\n"
                      "    tls: {ca_file: ca.pem, cert_file: c.pem, key_file: c.key}\n");
  auto cfg = load_config(ok);
  CHECK(cfg.store.redis.tls.ca_file == (dir.path / "ca.pem").string());
  CHECK(cfg.store.redis.tls.key_file == (dir.path / "c.key").string());
  auto bad = dir.write("bad.yaml",
                       "store:\n  kind: redis\n  key: k\n  redis:\n    url: http://r/0\n"
                       "    tls: {cert_file: c.pem}\n");
  auto problems = problems_of(bad);
  REQUIRE(problems.size() == 3);
  CHECK(problems[0] ==
        "bad.yaml:5: store.redis.url: must look like redis://host:6379/0 or "
        "rediss://user@host:6380/0");
  CHECK(problems[1] == "bad.yaml:6: store.redis.tls: cert_file and key_file go together");
  CHECK(problems[2] == "bad.yaml:6: store.redis.tls: is for rediss:// urls");
}
