#include "gateway/auth/oauth.hpp"

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

TokenResult parse_token_response(unsigned status, std::string_view body) {
  TokenResult r;
  r.status = status;
  auto json = nlohmann::json::parse(body, nullptr, false);
  if (status / 100 == 2) {
    // Tokens are VSCHAR (RFC 6749 A.12, A.17): anything else is a malformed answer.
    auto token = [&](const char* key) -> const std::string* {
      if (!json.is_object() || !json.contains(key) || !json[key].is_string()) return nullptr;
      return &json[key].get_ref<const std::string&>();
    };
    const std::string* access = token("access_token");
    const std::string* refresh = token("refresh_token");
    if (access && !access->empty() && visible_ascii(*access) &&
        (!refresh || visible_ascii(*refresh))) {
      r.access_token = *access;
      if (refresh) r.refresh_token = *refresh;
      if (json.contains("expires_in")) {
        const auto& e = json["expires_in"];
        long long secs = -1;
        if (e.is_number()) {
          // Cast only what fits: a double beyond long long (1e25, NaN) is undefined behaviour.
          double d = e.get<double>();
          if (d >= 0 && d <= kMaxExpiresIn) secs = static_cast<long long>(d);
        } else if (e.is_string()) {
          try {
            std::size_t used = 0;
            auto text = e.get<std::string>();
            secs = std::stoll(text, &used);
            if (used != text.size()) secs = -1;
          } catch (...) {
            secs = -1;
          }
        }
        // Beyond ten years is not a lifetime but garbage: treated as absent (the policy's
        // default applies), which also keeps secs * 1000 from overflowing.
        if (secs >= 0 && secs <= kMaxExpiresIn) r.expires_in = Millis(secs * 1000);
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
