#include "gateway/auth/oauth.hpp"

#include <charconv>

#include <boost/url/encode.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>
#include <nlohmann/json.hpp>

#include "gateway/auth/crypto.hpp"

namespace gw {

std::string form_component(std::string_view value) {
  boost::urls::encoding_opts opts;
  opts.space_as_plus = true;
  return boost::urls::encode(value, boost::urls::unreserved_chars, opts);
}

std::string form_encode(const std::vector<std::pair<std::string, std::string>>& params) {
  std::string out;
  boost::urls::encoding_opts opts;
  opts.space_as_plus = true;
  for (const auto& [k, v] : params) {
    if (!out.empty()) out += '&';
    out += boost::urls::encode(k, boost::urls::unreserved_chars, opts);
    out += '=';
    out += boost::urls::encode(v, boost::urls::unreserved_chars, opts);
  }
  return out;
}

namespace {

// Authenticates the client as the token endpoint wants it: an Authorization header, or
// client_id and client_secret among the parameters (`add`).
template <class Add>
void authenticate_client(const Connection& c, ClientAuth auth, TokenRequest& req, Add&& add) {
  switch (auth) {
    case ClientAuth::basic:
      // RFC 6749 2.3.1: each form-encoded first, so a ':' or '%' in a secret survives.
      req.headers.emplace_back("Authorization",
                               "Basic " + crypto::base64(form_component(c.client_id) + ":" +
                                                         form_component(c.client_secret)));
      break;
    case ClientAuth::basic_raw:
      req.headers.emplace_back("Authorization",
                               "Basic " + crypto::base64(c.client_id + ":" + c.client_secret));
      break;
    case ClientAuth::body:
    case ClientAuth::query:
      add("client_id", c.client_id);
      add("client_secret", c.client_secret);
      break;
    case ClientAuth::none:
      break;
  }
}

}  // namespace

std::optional<TokenRequest> build_token_request(const Connection& c, const UrlOverrides& urls,
                                                const std::string& grant, const StringMap& extra,
                                                std::string* error) {
  const OAuthSpec& o = *c.policy->oauth;
  auto lookup = [&](std::string_view name) { return lookup_placeholder(c, extra, name); };
  std::string missing;
  auto render = [&](const Template& t) -> std::optional<std::string> {
    auto v = t.render(lookup, &missing);
    if (!v && error) *error = "no value for {" + missing + "}";
    return v;
  };

  std::optional<std::string> url;
  if (grant == "refresh_token" && !urls.refresh_url.empty())
    url = urls.refresh_url;
  else if (grant == "refresh_token" && urls.token_url.empty() && o.refresh_url)
    url = render(*o.refresh_url);
  else if (!urls.token_url.empty())
    url = urls.token_url;
  else
    url = render(o.token_url);
  if (!url) return std::nullopt;

  const GrantSpec* spec = nullptr;
  if (auto it = o.grants.find(grant); it != o.grants.end()) spec = &it->second;
  std::vector<std::pair<std::string, std::string>> params{
      {"grant_type", spec && spec->grant_type ? *spec->grant_type : grant}};
  auto has = [&](const std::string& k) {
    for (const auto& p : params)
      if (p.first == k) return true;
    return false;
  };
  auto add = [&](const std::string& k, const std::string& v) {
    if (!has(k)) params.emplace_back(k, v);
  };
  auto extra_value = [&](const char* k) {
    auto it = extra.find(k);
    return it == extra.end() ? std::string() : it->second;
  };
  if (grant == "authorization_code") {
    add("code", extra_value("code"));
    add("redirect_uri", extra_value("redirect_uri"));
    // PKCE (RFC 7636 4.5): the verifier whose challenge went with the authorize request.
    if (auto v = extra_value("code_verifier"); !v.empty()) add("code_verifier", v);
  } else if (grant == "refresh_token") {
    add("refresh_token", extra_value("refresh_token"));
  }
  if (spec) {
    for (const auto& [k, t] : spec->params) {
      auto v = render(t);
      if (!v) return std::nullopt;
      add(k, *v);
    }
  }
  TokenRequest req;
  req.method = o.token_method;
  req.response = o.token_response;
  ClientAuth auth = spec && spec->client_auth ? *spec->client_auth : o.client_auth;
  authenticate_client(c, auth, req, add);
  req.headers.emplace_back("Accept", "application/json");
  for (const auto& [name, tpl] : o.token_headers) {
    auto v = render(tpl);
    if (!v) return std::nullopt;
    if (!visible_ascii(*v)) {
      if (error) *error = "token header " + name + " would not be visible ASCII";
      return std::nullopt;
    }
    req.headers.emplace_back(name, *v);
  }
  if (req.method == "GET") {
    req.url = *url + (url->find('?') == std::string::npos ? "?" : "&") + form_encode(params);
  } else if (o.token_body_json) {
    req.url = *url;
    nlohmann::json body = nlohmann::json::object();
    for (const auto& [k, v] : params) body[k] = v;
    req.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    req.headers.emplace_back("Content-Type", "application/json");
  } else {
    req.url = *url;
    req.body = form_encode(params);
    req.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
  }
  return req;
}

std::optional<TokenRequest> build_revoke_request(const Connection& c, const UrlOverrides& urls,
                                                 const std::string& token, std::string_view hint,
                                                 std::string* error) {
  const OAuthSpec& o = *c.policy->oauth;
  std::string url = urls.revoke_url;
  if (url.empty()) {
    if (!o.revoke_url) {
      if (error) *error = "the policy has no revoke URL";
      return std::nullopt;
    }
    std::string missing;
    auto rendered = o.revoke_url->render(
        [&](std::string_view n) { return lookup_placeholder(c, {}, n); }, &missing);
    if (!rendered) {
      if (error) *error = "no value for {" + missing + "}";
      return std::nullopt;
    }
    url = *rendered;
  }
  std::vector<std::pair<std::string, std::string>> params{{"token", token},
                                                          {"token_type_hint", std::string(hint)}};
  auto add = [&](const std::string& k, const std::string& v) { params.emplace_back(k, v); };
  TokenRequest req;
  req.method = "POST";  // RFC 7009 2.1
  req.url = url;
  authenticate_client(c, o.client_auth, req, add);
  req.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
  req.body = form_encode(params);
  return req;
}

namespace {

constexpr long long kMaxExpiresIn = 10LL * 365 * 24 * 3600;  // seconds

}  // namespace

namespace {

// The value at a dot path ("authed_user.access_token"), or null when any step is missing.
const nlohmann::json* at_path(const nlohmann::json& j, std::string_view path) {
  const nlohmann::json* cur = &j;
  while (!path.empty()) {
    auto dot = path.find('.');
    auto name = path.substr(0, dot);
    if (!cur->is_object()) return nullptr;
    auto it = cur->find(name);
    if (it == cur->end()) return nullptr;
    cur = &*it;
    path = dot == std::string_view::npos ? std::string_view() : path.substr(dot + 1);
  }
  return cur;
}

// A non-negative whole number from a JSON number or a numeric string, -1 otherwise (or when
// it is beyond `limit`).
long long whole_number(const nlohmann::json& e, long long limit) {
  if (e.is_number()) {
    // Cast only what fits: a double beyond long long (1e25, NaN) is undefined behaviour.
    double d = e.get<double>();
    return d >= 0 && d <= static_cast<double>(limit) ? static_cast<long long>(d) : -1;
  }
  if (!e.is_string()) return -1;
  const auto& text = e.get_ref<const std::string&>();
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos) return -1;
  long long n = -1;
  // No exceptions: from_chars reports a value past long long instead of throwing.
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc{} || end != text.data() + text.size()) return -1;
  return n <= limit ? n : -1;
}

int digits(std::string_view s, std::size_t at, std::size_t n) {
  int v = 0;
  for (std::size_t i = at; i < at + n; ++i) {
    if (i >= s.size() || s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

}  // namespace

std::optional<long long> parse_rfc3339(std::string_view s) {
  // YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)
  if (s.size() < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
      s[13] != ':' || s[16] != ':')
    return std::nullopt;
  int year = digits(s, 0, 4), mon = digits(s, 5, 2), day = digits(s, 8, 2);
  int hour = digits(s, 11, 2), min = digits(s, 14, 2), sec = digits(s, 17, 2);
  if (year < 1970 || mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 ||
      sec > 60 || hour < 0 || min < 0 || sec < 0)
    return std::nullopt;
  std::size_t i = 19;
  if (i < s.size() && s[i] == '.') {
    ++i;
    std::size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    if (i == start) return std::nullopt;
  }
  long long offset = 0;
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) {
    ++i;
  } else if (i + 6 == s.size() && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
    int oh = digits(s, i + 1, 2), om = digits(s, i + 4, 2);
    if (oh < 0 || om < 0 || oh > 23 || om > 59) return std::nullopt;
    offset = (s[i] == '+' ? 1 : -1) * (oh * 3600LL + om * 60LL);
    i += 6;
  } else {
    return std::nullopt;
  }
  if (i != s.size()) return std::nullopt;
  // Days since the epoch (Howard Hinnant's days_from_civil).
  int y = year - (mon <= 2);
  long long era = y / 400;
  long long yoe = y - era * 400;
  long long doy = (153LL * (mon + (mon > 2 ? -3 : 9)) + 2) / 5 + day - 1;
  long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  long long days = era * 146097 + doe - 719468;
  return days * 86400 + hour * 3600LL + min * 60LL + sec - offset;
}

TokenResult parse_token_response(unsigned status, std::string_view body,
                                 const TokenResponseMap& map, Clock::time_point now) {
  TokenResult r;
  r.status = status;
  auto json = nlohmann::json::parse(body, nullptr, false);
  if (status / 100 == 2) {
    // A 2xx that says it failed ({"ok":false,"error":"invalid_refresh_token"}).
    if (const auto* e = at_path(json, map.error);
        json.is_object() && e && e->is_string() && !e->get_ref<const std::string&>().empty()) {
      r.error = e->get<std::string>();
      // Only a refusal of the grant itself needs a person; "ratelimited", "internal_error"
      // and the like pass, as a 5xx or 429 would.
      static constexpr std::string_view kRefusals[] = {
          "invalid_grant",         "invalid_client", "unauthorized_client",
          "invalid_refresh_token", "token_revoked",  "token_expired",
          "invalid_token",         "access_denied",  "invalid_client_secret"};
      bool refusal = false;
      for (auto code : kRefusals) refusal = refusal || r.error == code;
      r.failure = refusal ? TokenFailure::permanent : TokenFailure::transient;
      return r;
    }
    // Tokens are VSCHAR (RFC 6749 A.12, A.17): anything else is a malformed answer.
    auto token = [&](const std::string& path) -> const std::string* {
      const auto* v = at_path(json, path);
      return v && v->is_string() ? &v->get_ref<const std::string&>() : nullptr;
    };
    const std::string* access = token(map.access_token);
    const std::string* refresh = token(map.refresh_token);
    if (access && !access->empty() && visible_ascii(*access) &&
        (!refresh || visible_ascii(*refresh))) {
      r.access_token = *access;
      if (refresh) r.refresh_token = *refresh;
      // Beyond ten years is not a lifetime but garbage: treated as absent (the policy's
      // default applies), which also keeps the milliseconds from overflowing.
      const auto* e = at_path(json, map.expires_in);
      if (e && (e->is_number() || e->is_string())) {
        long long n = whole_number(*e, map.expires_in_ms ? kMaxExpiresIn * 1000 : kMaxExpiresIn);
        if (n >= 0) r.expires_in = Millis(map.expires_in_ms ? n : n * 1000);
      } else if (const auto* a = at_path(json, map.expires_at)) {
        std::optional<long long> at;
        if (a->is_string()) at = parse_rfc3339(a->get_ref<const std::string&>());
        if (!at) {
          long long n = whole_number(*a, 253402300799LL);  // up to year 9999
          if (n >= 0) at = n;
        }
        if (at) {
          long long left =
              *at -
              std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
          if (left < 0) left = 0;
          if (left <= kMaxExpiresIn) r.expires_in = Millis(left * 1000);
        }
      }
      return r;
    }
    r.failure = TokenFailure::transient;
    r.error = "malformed_token_response";
    return r;
  }
  // Error answers: OAuth {"error"}, Comm100 {code, message} (an integer code: a float such as
  // 4e99 would not fit the cast), Chip's bare status.
  if (json.is_object() && json.contains("error") && json["error"].is_string() &&
      !json["error"].get_ref<const std::string&>().empty())
    r.error = json["error"].get<std::string>();
  else if (json.is_object() && json.contains("code") && json["code"].is_number_integer())
    r.error = "comm100_" + std::to_string(json["code"].get<long long>());
  else
    r.error = "http_" + std::to_string(status);
  bool permanent_code =
      r.error == "invalid_grant" || r.error == "invalid_client" || r.error == "unauthorized_client";
  if (status >= 500 || status == 429 || status == 408)
    r.failure = permanent_code ? TokenFailure::permanent : TokenFailure::transient;
  else
    r.failure = TokenFailure::permanent;
  return r;
}

}  // namespace gw
