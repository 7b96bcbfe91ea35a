// A vendor policy (SPEC section 4): how to reach the vendor, how to obtain and refresh its
// tokens, and where the credential goes on each request. Data loaded from YAML.
#pragma once
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "gateway/config/config.hpp"
#include "gateway/policy/template.hpp"

namespace gw {

// The placeholders the gateway fills itself: no var may be named like one (SPEC 4).
bool is_builtin_placeholder(std::string_view name);
// Why a var pattern is refused before std::regex compiles it ("" when it is not): at most 256
// characters, repeat counts whose product stays under 100,000, and no repeated group that
// itself repeats or has alternatives (exponential backtracking).
std::string pattern_limits_problem(std::string_view pattern);
// The longest value a var with a pattern may take (std::regex recurses per character).
constexpr std::size_t kMaxVarBytes = 1024;

struct VarSpec {
  std::string pattern_text;
  std::optional<std::regex> pattern;
  bool required = false;
  std::optional<std::string> default_value;
};

// basic: RFC 6749 2.3.1, id and secret form-encoded, then base64; basic_raw: id:secret as
// they are (vendors that do not decode).
enum class ClientAuth { basic, basic_raw, body, query, none };
enum class StateMode { param, cookie };
enum class PkceMode { s256, none };  // RFC 7636; S256 unless a vendor breaks on it
enum class InjectKind { header, query, basic };
enum class ReplayMode { all, idempotent };

using TemplateParams = std::vector<std::pair<std::string, Template>>;

// Where a token answer keeps its fields (SPEC 4 token_response): dot paths into its JSON.
struct TokenResponseMap {
  std::string access_token = "access_token", refresh_token = "refresh_token";
  std::string expires_in = "expires_in", expires_at = "expires_at", error = "error";
  bool expires_in_ms = false;  // expires_in_unit: ms
};

struct GrantSpec {
  TemplateParams params;
  std::optional<ClientAuth> client_auth;  // overrides token.client_auth for this grant
  std::optional<std::string> grant_type;  // sent instead of the grant's own name
};

struct OAuthSpec {
  struct {
    Template url;
    TemplateParams params;
    StateMode state = StateMode::param;
    PkceMode pkce = PkceMode::s256;
  } authorize;
  Template token_url;
  std::string token_method = "POST";  // POST (form body) | GET (query string)
  bool token_body_json = false;       // token.body: json (a POST's parameters as a JSON object)
  TemplateParams token_headers;       // token.headers: extra headers on every token request
  TokenResponseMap token_response;
  ClientAuth client_auth = ClientAuth::body;
  std::optional<Template> refresh_url;
  std::map<std::string, GrantSpec> grants;
  std::optional<Millis> default_expires_in;  // absent: tokens without expires_in never expire
  std::optional<Millis> refresh_token_lifetime;
  std::optional<Template> revoke_url;
  std::string revoke_method = "POST";
};

struct InjectSpec {
  InjectKind kind = InjectKind::header;
  std::string name;             // header or query parameter name
  Template value;               // header/query value
  Template username, password;  // basic
};

struct Policy {
  std::string name, title, docs;
  std::filesystem::path file;
  std::map<std::string, VarSpec> vars;
  Template upstream;
  std::optional<OAuthSpec> oauth;
  InjectSpec inject;
  std::set<unsigned> reauth_on{401};
  ReplayMode replay = ReplayMode::all;

  bool refreshable() const { return oauth && oauth->grants.count("refresh_token"); }
};

using PolicyMap = std::map<std::string, std::shared_ptr<const Policy>>;

// Loads every *.yaml / *.yml in the folders; throws ConfigError listing all problems.
PolicyMap load_policies(const std::vector<std::filesystem::path>& dirs);

}  // namespace gw
