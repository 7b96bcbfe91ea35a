#include "gateway/auth/credential.hpp"

#include "gateway/auth/crypto.hpp"

namespace gw {

const char* state_name(ConnectionState s) {
  switch (s) {
    case ConnectionState::ready:
      return "ready";
    case ConnectionState::refreshing:
      return "refreshing";
    case ConnectionState::degraded:
      return "degraded";
    case ConnectionState::needs_reauth:
      return "needs_reauth";
    case ConnectionState::pending_authorization:
      return "pending_authorization";
  }
  return "ready";
}

const char* health_event(ConnectionState from, ConnectionState to) {
  if (from == to) return nullptr;
  switch (to) {
    case ConnectionState::needs_reauth:
      return "needs_reauth";
    case ConnectionState::degraded:
      return "degraded";
    case ConnectionState::ready:
      return from == ConnectionState::degraded || from == ConnectionState::needs_reauth
                 ? "recovered"
                 : nullptr;
    default:
      return nullptr;
  }
}

std::optional<std::string> lookup_placeholder(const Connection& c, const StringMap& extra,
                                              std::string_view name) {
  // Built-ins first: no var or credential can stand in for the client's identity, the
  // redirect URI or the state (SPEC 4).
  std::string key(name);
  if (name == "client_id") return c.client_id;
  if (name == "client_secret") return c.client_secret;
  if (is_builtin_placeholder(name)) {
    if (auto it = extra.find(key); it != extra.end()) return it->second;
    return std::nullopt;
  }
  if (auto it = c.vars.find(key); it != c.vars.end()) return it->second;
  if (auto it = extra.find(key); it != extra.end()) return it->second;
  if (auto it = c.credentials.find(key); it != c.credentials.end()) return it->second;
  return std::nullopt;
}

bool visible_ascii(std::string_view value) {
  for (char c : value)
    if (c < 0x20 || c > 0x7e) return false;
  return true;
}

std::optional<Credential> render_credential(const Connection& c, std::string access_token,
                                            std::string* error) {
  Credential out;
  const InjectSpec& spec = c.policy->inject;
  StringMap extra{{"access_token", access_token}};
  auto lookup = [&](std::string_view name) { return lookup_placeholder(c, extra, name); };
  std::string missing;
  out.kind = spec.kind;
  out.name = spec.name;
  if (spec.kind == InjectKind::basic) {
    auto user = spec.username.render(lookup, &missing);
    auto pass = user ? spec.password.render(lookup, &missing) : std::nullopt;
    if (!user || !pass) {
      if (error) *error = "no value for {" + missing + "}";
      return std::nullopt;
    }
    out.value = "Basic " + crypto::base64(*user + ":" + *pass);
    out.secrets = {*pass, out.value.substr(6)};
  } else {
    auto value = spec.value.render(lookup, &missing);
    if (!value) {
      if (error) *error = "no value for {" + missing + "}";
      return std::nullopt;
    }
    out.value = *value;
    out.secrets = {out.value};
    // Injected as a header line as is: a CR, LF or other control byte would forge header
    // lines (a query parameter is percent-encoded instead).
    if (spec.kind == InjectKind::header && !visible_ascii(out.value)) {
      if (error) *error = "the credential holds characters a header value cannot carry";
      return std::nullopt;
    }
  }
  if (!access_token.empty()) out.secrets.push_back(access_token);
  out.access_token = std::move(access_token);
  return out;
}

std::shared_ptr<const Credential> make_credential(const Connection& c, TokenGrant g,
                                                  std::string* error) {
  std::string ignored;
  auto cred = render_credential(c, std::move(g.access_token), error ? error : &ignored);
  if (!cred) return nullptr;
  cred->refresh_token = std::move(g.refresh_token);
  if (!cred->refresh_token.empty()) cred->secrets.push_back(cred->refresh_token);
  cred->issued_at = g.issued_at;
  cred->expires_at = g.expires_at;
  cred->version = g.version;
  return std::make_shared<const Credential>(std::move(*cred));
}

void carry_credential(const Connection& from, Connection& to) {
  auto cred = from.current();
  if (!cred) return;
  if (auto fresh = make_credential(to, {cred->access_token, cred->refresh_token, cred->issued_at,
                                        cred->expires_at, cred->version}))
    to.publish(std::move(fresh));
}

}  // namespace gw
