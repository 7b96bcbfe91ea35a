#include "gateway/proxy/routes.hpp"

namespace gw {

std::string prepare_connection(Connection& c, const Integration& integration,
                               const StringMap& connection_vars) {
  const Policy& p = *integration.policy;
  c.policy = integration.policy;
  c.client_id = integration.config.client_id;
  c.client_secret = integration.config.client_secret;
  c.vars.clear();
  // Policy defaults, then the operator's integration vars, which a connection cannot
  // override: it fills only what the integration leaves open (SPEC 4).
  for (const auto& [name, spec] : p.vars)
    if (spec.default_value) c.vars[name] = *spec.default_value;
  for (const auto& [k, v] : integration.config.vars) {
    if (is_builtin_placeholder(k)) return "var " + k + " is a built-in placeholder";
    c.vars[k] = v;
  }
  for (const auto& [k, v] : connection_vars) {
    if (is_builtin_placeholder(k)) return "var " + k + " is a built-in placeholder";
    if (integration.config.vars.count(k))
      return "var " + k + " is fixed by integration " + integration.config.name;
    c.vars[k] = v;
  }
  for (const auto& [name, spec] : p.vars) {
    auto it = c.vars.find(name);
    if (it == c.vars.end()) {
      if (spec.required) return "var " + name + " is required by policy " + p.name;
      continue;
    }
    // std::regex recurses per character: a bounded value keeps it off the stack's edge.
    if (spec.pattern && it->second.size() > kMaxVarBytes)
      return "var " + name + " is longer than " + std::to_string(kMaxVarBytes) + " characters";
    if (spec.pattern && !std::regex_match(it->second, *spec.pattern))
      return "var " + name + " = \"" + it->second + "\" does not match " + spec.pattern_text;
  }
  const auto& override_url = integration.config.overrides.upstream;
  std::string url;
  if (!override_url.empty()) {
    url = override_url;
  } else {
    std::string missing;
    auto rendered = p.upstream.render(
        [&](std::string_view name) { return lookup_placeholder(c, {}, name); }, &missing);
    if (!rendered) return "upstream needs a value for {" + missing + "}";
    url = *rendered;
  }
  return parse_upstream(url, c.upstream);
}

// What each grant needs from the connection's credentials before it can obtain a token.
std::string check_grant(const ConnectionConfig& cc, const Policy& p) {
  const auto& cr = cc.credentials;
  if (cc.grant == "static") {
    StringMap extra{{"access_token", cr.count("access_token") ? cr.at("access_token") : ""}};
    if (p.inject.kind == InjectKind::basic) {
      for (const auto* t : {&p.inject.username, &p.inject.password})
        for (const auto& piece : t->pieces())
          if (piece.placeholder && !cr.count(piece.text) && piece.text != "client_id" &&
              piece.text != "client_secret")
            return "grant static needs credentials." + piece.text;
      return "";
    }
    if (!cr.count("access_token")) return "grant static needs credentials.access_token";
    return "";
  }
  if (!p.oauth) return "policy " + p.name + " has no OAuth; use grant: static";
  if (cc.grant != "authorization_code" && !p.oauth->grants.count(cc.grant))
    return "policy " + p.name + " does not support grant " + cc.grant;
  if (cc.grant == "authorization_code" && !p.oauth->grants.count("authorization_code"))
    return "policy " + p.name + " does not support grant authorization_code";
  if (cc.grant == "refresh_token" && !cr.count("refresh_token"))
    return "grant refresh_token needs credentials.refresh_token";
  if (cc.grant == "password" && !cr.count("password"))
    return "grant password needs credentials.password";
  return "";
}

std::shared_ptr<Connection> make_connection(const ConnectionConfig& cc, const Integration& integ,
                                            std::string* key, std::string* error) {
  if (auto err = check_grant(cc, *integ.policy); !err.empty()) {
    *key = "grant";
    *error = err;
    return nullptr;
  }
  auto conn = std::make_shared<Connection>();
  conn->id = cc.id;
  conn->integration = cc.integration;
  conn->grant = cc.grant;
  conn->credentials = cc.credentials;
  if (auto err = prepare_connection(*conn, integ, cc.vars); !err.empty()) {
    *key = "vars";
    *error = err;
    return nullptr;
  }
  if (cc.grant != "static") {
    // A bootstrap access token (with its expires_in) serves until it needs refreshing;
    // otherwise the first token is obtained at start, or by onboarding.
    auto at = cc.credentials.find("access_token");
    auto rt = cc.credentials.find("refresh_token");
    if (at != cc.credentials.end() || rt != cc.credentials.end()) {
      TokenGrant g;
      g.access_token = at == cc.credentials.end() ? "" : at->second;
      g.refresh_token = rt == cc.credentials.end() ? "" : rt->second;
      g.issued_at = Clock::now();
      auto ei = cc.credentials.find("expires_in");
      if (at == cc.credentials.end())
        g.expires_at = Clock::time_point::min();
      else if (ei != cc.credentials.end())
        g.expires_at = g.issued_at + std::chrono::seconds(std::atoll(ei->second.c_str()));
      if (auto cred = make_credential(*conn, std::move(g))) conn->publish(std::move(cred));
    } else if (cc.grant == "authorization_code") {
      conn->lifecycle->state = ConnectionState::pending_authorization;
    }
  }
  if (cc.grant == "static") {
    TokenGrant g;
    g.access_token = cc.credentials.count("access_token") ? cc.credentials.at("access_token") : "";
    g.issued_at = Clock::now();
    g.version = 1;
    auto cred = make_credential(*conn, std::move(g), error);
    if (!cred) {
      *key = "credentials";
      return nullptr;
    }
    conn->publish(std::move(cred));
  }
  return conn;
}

namespace {

// Takes connection `id` out of an integration (a copy the caller owns).
void drop(Integration& integ, const std::string& id) {
  std::erase_if(integ.connections, [&](const auto& c) { return c->id == id; });
  if (integ.default_connection && integ.default_connection->id == id)
    integ.default_connection.reset();
}

}  // namespace

std::shared_ptr<const Routes> with_connection(const Routes& routes,
                                              std::shared_ptr<Connection> conn) {
  return with_connections(routes, {std::move(conn)});
}

// One copy of the table and of each integration touched, however many connections are
// added: start-up and reload with thousands of stored connections stay linear.
std::shared_ptr<const Routes> with_connections(
    const Routes& routes, const std::vector<std::shared_ptr<Connection>>& add) {
  auto out = std::make_shared<Routes>(routes);
  std::map<std::string, std::shared_ptr<Integration>, std::less<>> copied;
  auto own = [&](const std::string& name) -> Integration* {
    auto it = out->integrations.find(name);
    if (it == out->integrations.end()) return nullptr;
    auto& copy = copied[name];
    if (!copy) it->second = copy = std::make_shared<Integration>(*it->second);
    return copy.get();
  };
  for (const auto& conn : add) {
    if (auto old = out->connections.find(conn->id); old != out->connections.end()) {
      if (auto* integ = own(old->second->integration)) drop(*integ, conn->id);
      out->connections.erase(old);
    }
    auto* integ = own(conn->integration);
    if (!integ) continue;
    integ->connections.push_back(conn);
    if (integ->config.default_connection == conn->id) integ->default_connection = conn;
    out->connections[conn->id] = conn;
  }
  return out;
}

std::shared_ptr<const Routes> without_connection(const Routes& routes, const std::string& id) {
  auto out = std::make_shared<Routes>(routes);
  auto cit = out->connections.find(id);
  if (cit == out->connections.end()) return out;
  auto it = out->integrations.find(cit->second->integration);
  if (it != out->integrations.end()) {
    auto integ = std::make_shared<Integration>(*it->second);
    drop(*integ, id);
    it->second = integ;
  }
  out->connections.erase(cit);
  return out;
}

namespace {

// Moves `from`'s token onto `to`, rendered for `to`'s (possibly reloaded) policy.
void move_token(const Connection& from, Connection& to) {
  to.lifecycle = from.lifecycle;
  carry_credential(from, to);
}

}  // namespace

std::shared_ptr<const Routes> carry_over(const Routes& old, std::shared_ptr<const Routes> fresh) {
  auto out = fresh;
  std::vector<std::shared_ptr<Connection>> kept;
  for (const auto& [id, nc] : fresh->connections) {
    auto it = old.connections.find(id);
    if (it == old.connections.end() || nc->grant == "static") continue;
    const auto& oc = *it->second;
    if (oc.integration == nc->integration && oc.vars == nc->vars && oc.grant == nc->grant)
      move_token(oc, *nc);
  }
  for (const auto& [id, oc] : old.connections) {
    if (!oc->created_at_runtime || out->connections.count(id)) continue;
    auto iit = out->integrations.find(oc->integration);
    if (iit == out->integrations.end()) continue;
    ConnectionConfig cc{id, oc->integration, {}, oc->credentials, oc->grant, ""};
    for (const auto& [k, v] : oc->vars)
      if (!iit->second->config.vars.count(k)) cc.vars[k] = v;
    std::string key, error;
    auto nc = make_connection(cc, *iit->second, &key, &error);
    if (!nc) continue;
    nc->created_at_runtime = true;
    move_token(*oc, *nc);
    kept.push_back(std::move(nc));
  }
  return kept.empty() ? out : with_connections(*out, kept);
}

std::shared_ptr<const Routes> build_routes(const Config& config, PolicyMap policies) {
  Problems problems;
  auto routes = std::make_shared<Routes>();
  auto report = [&](const std::string& where, const std::string& key, const std::string& what) {
    // `where` is "file:line"; Problems wants them apart.
    auto colon = where.rfind(':');
    int line = colon == std::string::npos ? 0 : std::atoi(where.c_str() + colon + 1);
    problems.add(colon == std::string::npos ? where : where.substr(0, colon), line, key, what);
  };
  if (config.policy_dirs.empty())
    problems.add(config.file.filename().string(), 0, "policies", "no policy folder is configured");

  for (std::size_t i = 0; i < config.integrations.size(); ++i) {
    const auto& ic = config.integrations[i];
    std::string k = "integrations[" + std::to_string(i) + "]";
    auto pit = policies.find(ic.policy);
    if (pit == policies.end()) {
      report(config.locate(k + ".policy"), k + ".policy", "no policy named \"" + ic.policy + "\"");
      continue;
    }
    auto integ = std::make_shared<Integration>();
    integ->config = ic;
    integ->policy = pit->second;
    for (const auto& [name, value] : ic.vars)
      if (!pit->second->vars.count(name))
        report(config.locate(k + ".vars"), k + ".vars." + name,
               "policy " + ic.policy + " has no var named " + name);
    if (pit->second->inject.kind == InjectKind::query)
      integ->injected_query_names.push_back(pit->second->inject.name);
    routes->integrations[ic.name] = integ;
  }

  for (std::size_t i = 0; i < config.connections.size(); ++i) {
    const auto& cc = config.connections[i];
    std::string k = "connections[" + std::to_string(i) + "]";
    auto iit = routes->integrations.find(cc.integration);
    if (iit == routes->integrations.end()) {
      report(config.locate(k + ".integration"), k + ".integration",
             "no integration named \"" + cc.integration + "\"");
      continue;
    }
    auto& integ = *iit->second;
    std::string key, error;
    auto conn = make_connection(cc, integ, &key, &error);
    if (!conn) {
      report(config.locate(k + "." + key), k + "." + key, error);
      continue;
    }
    integ.connections.push_back(conn);
    routes->connections[cc.id] = conn;
  }

  for (std::size_t i = 0; i < config.integrations.size(); ++i) {
    const auto& ic = config.integrations[i];
    auto it = routes->integrations.find(ic.name);
    if (it == routes->integrations.end()) continue;
    if (!ic.default_connection.empty()) {
      std::string k = "integrations[" + std::to_string(i) + "].default_connection";
      auto cit = routes->connections.find(ic.default_connection);
      if (cit == routes->connections.end() || cit->second->integration != ic.name)
        report(config.locate(k), k,
               "no connection \"" + ic.default_connection + "\" of integration " + ic.name);
      else
        it->second->default_connection = cit->second;
    }
  }
  problems.throw_if_any();
  routes->policies = std::move(policies);
  return routes;
}

}  // namespace gw
