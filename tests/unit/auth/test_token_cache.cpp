// The token lifecycle state machines (SPEC 6) with a manual clock, a scripted token endpoint
// and a store that fails when told: single flight, refresh ahead, backoff, cooldown, version
// rules, rejection limits, and a fail-the-n-th-step loop. No sockets, no sleeps.
#include <doctest/doctest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <deque>
#include <filesystem>
#include <fstream>
#include <thread>

#include "gateway/auth/token_cache.hpp"
#include "gateway/observability/log.hpp"
#include "gateway/proxy/routes.hpp"

using namespace gw;
namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

// Answers exchanges from a script (the last answer repeats); records each request.
class ScriptedEndpoint final : public TokenEndpoint {
 public:
  std::deque<TokenResult> script;
  std::vector<TokenRequest> requests;
  int issued = 0;
  // Per request: did it carry the newest refresh token issued so far (rt-0 the seed)?
  std::vector<bool> carried_newest;

  asio::awaitable<TokenResult> exchange(TokenRequest request, Millis) override {
    auto newest = "refresh_token=rt-" + std::to_string(issued);
    carried_newest.push_back(request.body.find(newest) != std::string::npos ||
                             request.url.find(newest) != std::string::npos);
    requests.push_back(std::move(request));
    TokenResult r;
    if (!script.empty()) {
      r = script.front();
      if (script.size() > 1) script.pop_front();
    }
    if (r.failure == TokenFailure::none && r.access_token.empty()) {
      ++issued;
      r.access_token = "at-" + std::to_string(issued);
      r.refresh_token = "rt-" + std::to_string(issued);
      if (!r.expires_in) r.expires_in = Millis(100'000);
    }
    co_return r;
  }
};

TokenResult failure(TokenFailure kind, std::string error) {
  TokenResult r;
  r.failure = kind;
  r.error = std::move(error);
  return r;
}

// A memory store whose n-th save fails (counting from 1; 0: none).
// Called on the writer's thread; the test reads it once the io_context has run.
class FlakyStore final : public TokenStore {
 public:
  std::mutex mutex;
  int fail_save = 0, saves = 0;
  int fail_from = 0, fail_until = 0;  // saves fail_from..fail_until fail too (an outage)
  std::map<std::string, TokenRecord> records;
  std::map<std::string, TokenRecord> load() override {
    std::lock_guard lock(mutex);
    return records;
  }
  bool save(const TokenRecord& r) override {
    std::lock_guard lock(mutex);
    ++saves;
    if (saves == fail_save || (saves >= fail_from && saves <= fail_until)) return false;
    records[r.id] = r;
    return true;
  }
  bool remove(const std::string& id) override {
    std::lock_guard lock(mutex);
    return records.erase(id) > 0;
  }
  std::optional<TokenRecord> record(const std::string& id) {
    std::lock_guard lock(mutex);
    auto it = records.find(id);
    return it == records.end() ? std::nullopt : std::optional(it->second);
  }
};

struct Fixture {
  // First, so it goes last: the writer's thread may still be inside a post to it.
  asio::io_context ioc;
  Clock::time_point now = Clock::now();
  std::shared_ptr<ScriptedEndpoint> endpoint = std::make_shared<ScriptedEndpoint>();
  std::shared_ptr<FlakyStore> store = std::make_shared<FlakyStore>();
  std::shared_ptr<StoreWriter> writer;
  RefreshConfig refresh;
  std::shared_ptr<TokenCache> cache;
  std::shared_ptr<const Routes> routes;
  std::shared_ptr<Connection> conn;
  std::filesystem::path dir;

  Fixture() {
    log::set_level(log::Level::error);
    refresh.skew = 10s;
    refresh.timeout = 2s;
    refresh.backoff = {1s, 8s};
    refresh.failure_cooldown = 30s;
    char tmpl[] = "/tmp/gwtc-XXXXXX";
    dir = mkdtemp(tmpl);
    std::ofstream(dir / "gateway.yaml")
        << "store: {kind: memory}\npolicies: [" << GATEWAY_SOURCE_DIR << "/policies]\n"
        << "integrations:\n  - name: chime\n    policy: chime\n    client_id: cid\n"
        << "    client_secret: cs\n    overrides: {upstream: 'https://127.0.0.1:9', "
        << "token_url: 'https://127.0.0.1:9/token'}\n"
        << "connections:\n  - id: acme\n    integration: chime\n    grant: refresh_token\n"
        << "    credentials: {refresh_token: rt-0}\n";
    auto cfg = load_config(dir / "gateway.yaml");
    routes = build_routes(cfg, load_policies(cfg.policy_dirs));
    conn = routes->connections.at("acme");
    TokenCacheParts parts;
    parts.context = [this](const Connection&) {
      RefreshContext ctx;
      ctx.refresh = refresh;
      ctx.redirect_uri = "https://gw.example/oauth/callback";
      ctx.overrides = routes->integrations.at("chime")->config.overrides;
      return ctx;
    };
    parts.successor = [this](const std::string& id) { return routes->connections.at(id); };
    parts.endpoint = endpoint;
    writer = std::make_shared<StoreWriter>(store, StoreWriter::Retry{1ms, 5ms});
    parts.writer = writer;
    parts.now = [this] { return now; };
    cache = std::make_shared<TokenCache>(std::move(parts));
  }
  ~Fixture() { std::filesystem::remove_all(dir); }

  // Runs `n` acquires at once to completion; returns their results.
  std::vector<CredentialResult> acquire(int n = 1) {
    std::vector<CredentialResult> out(static_cast<std::size_t>(n));
    for (auto& slot : out)
      asio::co_spawn(
          ioc, [this, &slot]() -> asio::awaitable<void> { slot = co_await cache->acquire(conn); },
          asio::detached);
    ioc.restart();
    ioc.run();
    return out;
  }
  CredentialResult rejected(std::shared_ptr<const Credential> used, std::size_t what = 1) {
    CredentialResult out;
    asio::co_spawn(
        ioc, [&]() -> asio::awaitable<void> { out = co_await cache->rejected(conn, used, what); },
        asio::detached);
    ioc.restart();
    ioc.run();
    return out;
  }
  ConnectionState state() {
    std::lock_guard lock(conn->lifecycle->mutex);
    return conn->lifecycle->state;
  }
};

bool sends(const TokenRequest& r, std::string_view needle) {
  return r.body.find(needle) != std::string::npos || r.url.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("single flight: one token request for 50 waiters, each gets its result") {
  Fixture f;
  auto results = f.acquire(50);
  CHECK(f.endpoint->requests.size() == 1);
  for (const auto& r : results) {
    REQUIRE(r.credential);
    CHECK(r.credential->access_token == "at-1");
  }
  CHECK(sends(f.endpoint->requests[0], "grant_type=refresh_token"));
  CHECK(sends(f.endpoint->requests[0], "refresh_token=rt-0"));
  // The rotated refresh token was stored before the token was published.
  CHECK(f.store->record("acme")->refresh_token == "rt-1");
  CHECK(f.conn->current()->version == 1);
}

TEST_CASE("refresh ahead: not before max(skew, 10%) is left, never before half the lifetime") {
  CHECK(refresh_ahead_threshold(100s, 10s) == 10s);
  CHECK(refresh_ahead_threshold(1000s, 10s) == 100s);  // 10 % of the lifetime
  CHECK(refresh_ahead_threshold(3s, 60s) == 1500ms);   // short tokens: half their lifetime
  Fixture f;
  f.acquire();
  REQUIRE(f.endpoint->requests.size() == 1);  // at-1, lives 100 s
  f.now += 89s;                               // 11 s left: no refresh yet
  CHECK(f.acquire()[0].credential->access_token == "at-1");
  CHECK(f.endpoint->requests.size() == 1);
  f.now += 2s;  // 9 s left: the request is served with at-1, a refresh runs behind it
  CHECK(f.acquire()[0].credential->access_token == "at-1");
  CHECK(f.endpoint->requests.size() == 2);
  CHECK(f.conn->current()->access_token == "at-2");
  CHECK(sends(f.endpoint->requests[1], "refresh_token=rt-1"));  // the rotated one
}

TEST_CASE("an expired token is never injected: the request waits for the refresh") {
  Fixture f;
  f.acquire();
  f.now += 101s;
  auto r = f.acquire()[0];
  REQUIRE(r.credential);
  CHECK(r.credential->access_token == "at-2");
}

TEST_CASE("backoff: doubles from initial to max, each wait jittered within [half, all]") {
  BackoffConfig cfg{1s, 8s};
  Millis b{0};
  std::vector<Millis> seen;
  for (int i = 0; i < 6; ++i) seen.push_back(b = next_backoff(b, cfg));
  CHECK(seen == std::vector<Millis>{1s, 2s, 4s, 8s, 8s, 8s});
  for (int i = 0; i < 1000; ++i) {
    auto j = jittered(4s);
    CHECK(j >= 2s);
    CHECK(j <= 4s);
  }
}

TEST_CASE("transient failures: degraded, backoff between attempts, the valid token serves") {
  Fixture f;
  f.acquire();
  f.endpoint->script = {failure(TokenFailure::transient, "timeout")};
  f.now += 95s;  // inside the refresh-ahead window: at-1 still valid
  CHECK(f.acquire()[0].credential->access_token == "at-1");
  CHECK(f.endpoint->requests.size() == 2);
  CHECK(f.state() == ConnectionState::degraded);
  // Within the backoff nobody asks the vendor again; the token keeps serving.
  for (int i = 0; i < 5; ++i) CHECK(f.acquire()[0].credential->access_token == "at-1");
  CHECK(f.endpoint->requests.size() == 2);
  f.now += 1s;  // past the first backoff (at most 1 s)
  f.endpoint->script = {TokenResult{}};
  f.acquire();
  CHECK(f.endpoint->requests.size() == 3);
  CHECK(f.state() == ConnectionState::ready);
  CHECK(f.conn->current()->access_token == "at-2");
}

TEST_CASE("invalid_grant: needs_reauth, no request during the cooldown, one after it") {
  Fixture f;
  f.endpoint->script = {failure(TokenFailure::permanent, "invalid_grant")};
  auto r = f.acquire()[0];
  CHECK_FALSE(r.credential);
  CHECK(r.error.find("needs re-authorization") != std::string::npos);
  CHECK(f.state() == ConnectionState::needs_reauth);
  for (int i = 0; i < 20; ++i) CHECK_FALSE(f.acquire()[0].credential);
  CHECK(f.endpoint->requests.size() == 1);  // no storm against the vendor
  f.now += 31s;
  f.endpoint->script = {TokenResult{}};
  CHECK(f.acquire()[0].credential);
  CHECK(f.endpoint->requests.size() == 2);
  CHECK(f.state() == ConnectionState::ready);
}

TEST_CASE("version rules on rejection") {
  Fixture f;
  auto first = f.acquire()[0].credential;
  REQUIRE(first);
  // The token the request used is the current one: a forced refresh, a newer token.
  auto renewed = f.rejected(first);
  REQUIRE(renewed.credential);
  CHECK(renewed.credential->version == first->version + 1);
  CHECK(f.endpoint->requests.size() == 2);
  // A request that used the older one replays with the newer, without a refresh.
  auto again = f.rejected(first);
  REQUIRE(again.credential);
  CHECK(again.credential->version == renewed.credential->version);
  CHECK(f.endpoint->requests.size() == 2);
}

TEST_CASE("rejection limits: one refresh per interval, none for a request rejected fresh too") {
  Fixture f;
  auto t1 = f.acquire()[0].credential;
  auto t2 = f.rejected(t1, 7).credential;  // refresh #2
  REQUIRE(t2);
  // The replay with t2 was rejected too: request 7 is not about the token.
  f.cache->rejected_again(*f.conn, *t2, 7);
  f.now += 5s;
  CHECK_FALSE(f.rejected(t2, 7).credential);
  CHECK(f.endpoint->requests.size() == 2);
  // Another request still refreshes a token the vendor really revoked...
  auto t3 = f.rejected(t2, 8).credential;
  REQUIRE(t3);
  CHECK(f.endpoint->requests.size() == 3);
  // ...but not twice within the interval.
  f.now += 100ms;
  CHECK_FALSE(f.rejected(t3, 9).credential);
  CHECK(f.endpoint->requests.size() == 3);
}

TEST_CASE("fail the n-th step: endpoint or store failing at any call loses no refresh token") {
  for (int n = 1; n <= 4; ++n) {
    for (bool store_fails : {false, true}) {
      CAPTURE(n);
      CAPTURE(store_fails);
      Fixture f;
      if (store_fails) {
        f.store->fail_save = n;
      } else {
        for (int i = 1; i < n; ++i) f.endpoint->script.push_back(TokenResult{});
        f.endpoint->script.push_back(failure(TokenFailure::transient, "reset"));
        f.endpoint->script.push_back(TokenResult{});
      }
      for (int round = 0; round < 5; ++round) {
        f.now += 101s;  // expired: every round needs a refresh
        auto r = f.acquire(3);
        auto cred = f.conn->current();
        REQUIRE(cred);
        // Whatever failed, the connection holds the newest refresh token it was given.
        CHECK(cred->refresh_token == "rt-" + std::to_string(f.endpoint->issued));
        {
          std::lock_guard lock(f.conn->lifecycle->mutex);
          CHECK_FALSE(f.conn->lifecycle->refreshing);  // the refresh ended
          CHECK(f.conn->lifecycle->waiters.empty());   // every waiter was woken
        }
        if (r[0].credential) CHECK(r[0].credential->access_token == cred->access_token);
        if (f.state() == ConnectionState::degraded) f.now += 10s;  // past the backoff
      }
      // Every request carried the newest refresh token: none was redeemed twice or lost.
      CHECK(f.endpoint->carried_newest == std::vector<bool>(f.endpoint->requests.size(), true));
    }
  }
}

TEST_CASE("a store outage during a refresh: the new token serves, its record stays pending") {
  Fixture f;
  f.store->fail_from = 1;
  f.store->fail_until = 1'000'000;  // down until told otherwise
  auto r = f.acquire(3);
  for (const auto& one : r) {
    REQUIRE(one.credential);
    CHECK(one.credential->access_token == "at-1");  // from memory
  }
  CHECK(f.writer->pending() == 1);
  CHECK_FALSE(f.store->record("acme"));
  // The store comes back: the pending record lands without another refresh.
  {
    std::lock_guard lock(f.store->mutex);
    f.store->fail_until = 0;
  }
  for (int i = 0; i < 2000 && f.writer->pending(); ++i) std::this_thread::sleep_for(1ms);
  CHECK(f.writer->pending() == 0);
  REQUIRE(f.store->record("acme"));
  CHECK(f.store->record("acme")->refresh_token == "rt-1");
  CHECK(f.endpoint->requests.size() == 1);
}

TEST_CASE("a pending record is saved before the connection's next refresh") {
  Fixture f;
  f.store->fail_from = 1;
  f.store->fail_until = 1'000'000;
  f.acquire();
  REQUIRE(f.writer->pending() == 1);
  {
    std::lock_guard lock(f.store->mutex);
    f.store->fail_until = 0;
  }
  f.now += 101s;  // expired: the next request refreshes, after the pending record is saved
  auto r = f.acquire();
  REQUIRE(r[0].credential);
  CHECK(r[0].credential->access_token == "at-2");
  CHECK(f.writer->pending() == 0);
  CHECK(f.store->record("acme")->refresh_token == "rt-2");
  CHECK(f.endpoint->carried_newest == std::vector<bool>{true, true});
}
