#include <doctest/doctest.h>

#include "gateway/auth/crypto.hpp"
#include "gateway/auth/oauth.hpp"
#include "gateway/policy/policy.hpp"
#include "gateway/proxy/routes.hpp"

using namespace gw;

TEST_CASE("AES-256-GCM sealing binds the connection id") {
  std::string key = crypto::random_bytes(32);
  auto sealed = crypto::seal(key, "{\"access_token\":\"x\"}", "acme");
  CHECK(sealed.size() == 12 + 20 + 16);
  CHECK(crypto::open(key, sealed, "acme") == "{\"access_token\":\"x\"}");
  CHECK_FALSE(crypto::open(key, sealed, "other"));                      // moved to another id
  CHECK_FALSE(crypto::open(crypto::random_bytes(32), sealed, "acme"));  // wrong key
  sealed[20] ^= 1;
  CHECK_FALSE(crypto::open(key, sealed, "acme"));                           // damaged
  CHECK(crypto::seal(key, "same", "a") != crypto::seal(key, "same", "a"));  // random nonce
}

TEST_CASE("base64") {
  CHECK(crypto::base64("email:key") == "ZW1haWw6a2V5");
  CHECK(crypto::unbase64("ZW1haWw6a2V5") == "email:key");
  CHECK(crypto::unbase64("YQ==") == "a");
  CHECK_FALSE(crypto::unbase64("not base64!"));
  CHECK(crypto::unbase64(crypto::base64(std::string(32, '\x7f')))->size() == 32);
}

TEST_CASE("token responses: expires_in forms and error classes") {
  auto ok =
      parse_token_response(200, R"({"access_token":"a","refresh_token":"r","expires_in":"3600"})");
  CHECK(ok.failure == TokenFailure::none);
  CHECK(ok.refresh_token == "r");
  CHECK(ok.expires_in == Millis(3600000));
  // The fuzzer's find: 4.4e25 cast to long long was undefined behaviour. Absurd lifetimes are
  // treated as absent; so are negative ones.
  for (const char* absurd :
       {"4.44444e+25", "1e300", "-5", "315360001", "\"99999999999999999999\""}) {
    auto r = parse_token_response(
        200, std::string(R"({"access_token":"a","expires_in":)") + absurd + "}");
    CHECK(r.failure == TokenFailure::none);
    CHECK_FALSE(r.expires_in);
  }
  CHECK(parse_token_response(200, R"({"access_token":"a","expires_in":315360000})").expires_in ==
        Millis(315360000000LL));
  auto zendesk = parse_token_response(200, R"({"access_token":"a","token_type":"Bearer"})");
  CHECK(zendesk.failure == TokenFailure::none);
  CHECK_FALSE(zendesk.expires_in);
  CHECK(zendesk.refresh_token.empty());
  CHECK(parse_token_response(200, R"({"expires_in":5})").failure == TokenFailure::transient);
  // A token with a CR/LF (or any non-VSCHAR) would forge header lines once injected.
  auto forged = parse_token_response(200, R"({"access_token":"a\r\nX-Evil: 1"})");
  CHECK(forged.failure == TokenFailure::transient);
  CHECK(forged.error == "malformed_token_response");
  CHECK(parse_token_response(200, R"({"access_token":"a","refresh_token":"r\n"})").failure ==
        TokenFailure::transient);
  // The fuzzer's second find: a float "code" (4e99) was cast to long long.
  CHECK(parse_token_response(400, R"({"code":4.01013e+99})").error == "http_400");
  // And its third: an empty "error" left the failure without a reason.
  CHECK(parse_token_response(501, R"({"error":""})").error == "http_501");
  auto grant = parse_token_response(400, R"({"error":"invalid_grant"})");
  CHECK(grant.failure == TokenFailure::permanent);
  CHECK(grant.error == "invalid_grant");
  CHECK(parse_token_response(401, "").failure == TokenFailure::permanent);  // Chip: bare 401
  CHECK(parse_token_response(401, "").error == "http_401");
  CHECK(parse_token_response(400, R"({"code":400000,"message":"x"})").error == "comm100_400000");
  CHECK(parse_token_response(503, "").failure == TokenFailure::transient);
  CHECK(parse_token_response(429, "").failure == TokenFailure::transient);
}

TEST_CASE("token requests follow each policy") {
  auto policies = load_policies({std::filesystem::path(GATEWAY_SOURCE_DIR) / "policies"});
  auto make = [&](const std::string& policy, StringMap vars) {
    Integration integ;
    integ.policy = policies.at(policy);
    integ.config.client_id = "cid";
    integ.config.client_secret = "sec";
    auto c = std::make_shared<Connection>();
    c->id = "x";
    REQUIRE(prepare_connection(*c, integ, vars) == "");
    return c;
  };
  std::string error;
  auto chime = make("chime", {});
  auto r = build_token_request(*chime, {}, "refresh_token", {{"refresh_token", "rt"}}, &error);
  REQUIRE(r);
  CHECK(r->method == "POST");
  CHECK(r->url == "https://chime.me/api/user-web/oauth/token");
  CHECK(r->body == "grant_type=refresh_token&refresh_token=rt");
  CHECK(r->headers.front().second == "Basic " + crypto::base64("cid:sec"));

  auto chip = make("chip", {});
  r = build_token_request(*chip, {}, "refresh_token", {{"refresh_token", "rt"}}, &error);
  REQUIRE(r);
  CHECK(r->method == "GET");
  CHECK(r->url ==
        "https://api.getchip.tech/oauth/refresh?grant_type=refresh_token&refresh_token=rt"
        "&client_id=cid&client_secret=sec");
  CHECK(r->body.empty());

  auto comm100 = make("comm100", {{"site_id", "42"}});
  r = build_token_request(*comm100, {}, "password", {}, &error);
  CHECK_FALSE(r);  // the password grant needs {email} and {password}
  comm100->credentials = {{"email", "a@b.c"}, {"password", "p w"}};
  r = build_token_request(*comm100, {}, "password", {}, &error);
  REQUIRE(r);
  CHECK(r->url == "https://hosted.comm100.com/oauth/token");
  CHECK(r->body == "grant_type=password&email=a%40b.c&password=p+w");  // no client auth
  r = build_token_request(*comm100, {}, "client_credentials", {{"redirect_uri", "https://g/cb"}},
                          &error);
  REQUIRE(r);
  CHECK(r->body ==
        "grant_type=client_credentials&redirect_uri=https%3A%2F%2Fg%2Fcb&siteId=42"
        "&client_id=cid&client_secret=sec");

  auto zendesk = make("zendesk-chat", {{"subdomain", "acme"}});
  UrlOverrides urls;
  urls.token_url = "https://127.0.0.1:9/token";
  r = build_token_request(*zendesk, urls, "authorization_code",
                          {{"code", "c0de"}, {"redirect_uri", "https://g/cb"}}, &error);
  REQUIRE(r);
  CHECK(r->url == "https://127.0.0.1:9/token");
  CHECK(r->body ==
        "grant_type=authorization_code&code=c0de&redirect_uri=https%3A%2F%2Fg%2Fcb"
        "&scope=read+write&client_id=cid&client_secret=sec");
}

TEST_CASE("token responses at other paths: nested fields, milliseconds, an absolute expiry") {
  TokenResponseMap slack;
  slack.access_token = "authed_user.access_token";
  slack.refresh_token = "authed_user.refresh_token";
  slack.expires_in = "authed_user.expires_in";
  auto r = parse_token_response(
      200, R"({"ok":true,"authed_user":{"access_token":"a","refresh_token":"r","expires_in":60}})",
      slack);
  CHECK(r.failure == TokenFailure::none);
  CHECK(r.access_token == "a");
  CHECK(r.refresh_token == "r");
  CHECK(r.expires_in == Millis(60000));
  // A 2xx that says it failed is a permanent failure, with the vendor's word.
  auto failed = parse_token_response(200, R"({"ok":false,"error":"invalid_refresh_token"})", slack);
  CHECK(failed.failure == TokenFailure::permanent);
  CHECK(failed.error == "invalid_refresh_token");
  // The default paths miss the nested token: malformed, not a token.
  CHECK(parse_token_response(200, R"({"authed_user":{"access_token":"a"}})").failure ==
        TokenFailure::transient);

  TokenResponseMap ms;
  ms.expires_in_ms = true;
  CHECK(parse_token_response(200, R"({"access_token":"a","expires_in":1500})", ms).expires_in ==
        Millis(1500));

  auto now = Clock::time_point(std::chrono::seconds(1'800'000'000));
  auto at = parse_token_response(200, R"({"access_token":"a","expires_at":1800000090})", {}, now);
  CHECK(at.expires_in == Millis(90000));
  auto at_text = parse_token_response(
      200, R"({"access_token":"a","expires_at":"2027-01-15T08:01:30Z"})", {}, now);
  CHECK(at_text.expires_in == Millis(90000));
  auto past = parse_token_response(200, R"({"access_token":"a","expires_at":1700000000})", {}, now);
  CHECK(past.expires_in == Millis(0));
  // expires_in wins over expires_at; garbage in either is "none sent".
  CHECK(parse_token_response(200, R"({"access_token":"a","expires_in":5,"expires_at":1})", {}, now)
            .expires_in == Millis(5000));
  CHECK(!parse_token_response(200, R"({"access_token":"a","expires_at":"soon"})", {}, now)
             .expires_in);
}

TEST_CASE("RFC 3339 date-times") {
  CHECK(parse_rfc3339("1970-01-01T00:00:00Z") == 0);
  CHECK(parse_rfc3339("2027-01-15T08:01:30Z") == 1800000090);
  CHECK(parse_rfc3339("2027-01-15T08:01:30.123Z") == 1800000090);
  CHECK(parse_rfc3339("2027-01-15T10:01:30+02:00") == 1800000090);
  CHECK(parse_rfc3339("2027-01-15T03:01:30-05:00") == 1800000090);
  CHECK(parse_rfc3339("2000-02-29T00:00:00Z") == 951782400);
  for (const char* bad :
       {"", "2027-01-15", "2027-01-15 08:01:30Z", "2027-13-15T08:01:30Z", "2027-01-15T08:01:30",
        "2027-01-15T08:01:30+0200", "2027-01-15T08:01:30Zjunk", "2027-01-15T08:01:30."})
    CHECK_MESSAGE(!parse_rfc3339(bad), bad);
}

TEST_CASE("token responses: what review found") {
  // A numeric string past long long is garbage, not an exception (a throw ended the refresh
  // coroutine before it settled, leaving the connection "refreshing" for good).
  auto huge =
      parse_token_response(200, R"({"access_token":"a","expires_in":"9999999999999999999"})");
  CHECK(huge.failure == TokenFailure::none);
  CHECK(!huge.expires_in);
  auto huge_at =
      parse_token_response(200, R"({"access_token":"a","expires_at":"99999999999999999999"})");
  CHECK(!huge_at.expires_in);
  // Only a refusal of the grant is permanent in a 2xx error answer.
  CHECK(parse_token_response(200, R"({"ok":false,"error":"ratelimited"})").failure ==
        TokenFailure::transient);
  CHECK(parse_token_response(200, R"({"ok":false,"error":"invalid_refresh_token"})").failure ==
        TokenFailure::permanent);
  // A null expires_in is absent: expires_at applies.
  auto now = Clock::time_point(std::chrono::seconds(1'800'000'000));
  CHECK(parse_token_response(
            200, R"({"access_token":"a","expires_in":null,"expires_at":1800000010})", {}, now)
            .expires_in == Millis(10000));
}
