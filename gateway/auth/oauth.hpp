// The OAuth2 token endpoint client, pure half: builds a grant's token request exactly as the
// policy says (GET or POST, client auth basic/body/query/none, the vendor's parameter
// names) and classifies the answer. token_fetch.hpp sends it.
#pragma once
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "gateway/auth/credential.hpp"
#include "gateway/config/config.hpp"

namespace gw {

struct TokenRequest {
  std::string method;  // GET | POST
  std::string url;     // with the query for GET
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;           // form for POST
  TokenResponseMap response;  // where the answer keeps its fields (the policy's)
};

// Builds the request for `grant`. `extra` holds code, redirect_uri, state, refresh_token as
// the grant needs. `urls` are the integration's overrides. Nullopt with `error` set when a
// placeholder has no value.
std::optional<TokenRequest> build_token_request(const Connection& c, const UrlOverrides& urls,
                                                const std::string& grant, const StringMap& extra,
                                                std::string* error);

// An RFC 7009 revocation of `token` (hint: refresh_token or access_token): a form POST to the
// override's or the policy's revoke URL, the client authenticated as at the token endpoint.
std::optional<TokenRequest> build_revoke_request(const Connection& c, const UrlOverrides& urls,
                                                 const std::string& token, std::string_view hint,
                                                 std::string* error);

enum class TokenFailure { none, permanent, transient };

struct TokenResult {
  TokenFailure failure = TokenFailure::none;
  std::string error;  // OAuth error code, "comm100_401000", "http_419", "timeout", ...
  unsigned status = 0;
  std::string access_token, refresh_token;  // refresh_token empty: keep the old one
  std::optional<Millis> expires_in;         // nullopt: the vendor sent none
};

// Classifies a token endpoint's answer (SPEC 6.4): invalid_grant/invalid_client/400/401 are
// permanent; 5xx and 429 transient.
// `map` says where the fields are (dot paths); an `expires_at` (epoch seconds or RFC 3339)
// counts from `now` when there is no expires_in; a 2xx answer with the error field set is a
// permanent failure (Slack's {"ok":false,"error":...}).
TokenResult parse_token_response(unsigned status, std::string_view body,
                                 const TokenResponseMap& map = {},
                                 Clock::time_point now = Clock::now());
// RFC 3339 date-time (Z or an offset, optional fraction) as UTC seconds; nullopt otherwise.
std::optional<long long> parse_rfc3339(std::string_view text);

std::string form_encode(const std::vector<std::pair<std::string, std::string>>& params);
// One value application/x-www-form-urlencoded (a space as '+').
std::string form_component(std::string_view value);

}  // namespace gw
