// The routing table: integrations (with their policy) and connections, built from a
// validated Config and the loaded policies. Immutable once built; a reload builds a new one.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gateway/auth/credential.hpp"
#include "gateway/config/config.hpp"
#include "gateway/policy/policy.hpp"

namespace gw {

struct Integration {
  IntegrationConfig config;
  std::shared_ptr<const Policy> policy;
  std::vector<std::shared_ptr<Connection>> connections;
  std::shared_ptr<Connection> default_connection;  // may be null
  std::vector<std::string> injected_query_names;   // for access-log redaction
};

struct Routes {
  std::map<std::string, std::shared_ptr<Integration>, std::less<>> integrations;
  std::map<std::string, std::shared_ptr<Connection>, std::less<>> connections;
  PolicyMap policies;
};

// Cross-checks the config against the policies and renders every connection. Throws
// ConfigError with "file:line: key: problem" lines.
std::shared_ptr<const Routes> build_routes(const Config& config, PolicyMap policies);

// Resolves a connection's vars (policy defaults < integration < connection), checks them
// against the policy's patterns and renders its upstream. Returns an error text or "".
std::string prepare_connection(Connection& c, const Integration& integration,
                               const StringMap& connection_vars);

// What `grant` needs from the connection's credentials; "" when they suffice.
std::string check_grant(const ConnectionConfig& cc, const Policy& p);

// Builds one connection (vars checked, upstream rendered, bootstrap credential published).
// Null with `key` ("grant", "vars", "credentials") and `error` set when it cannot.
std::shared_ptr<Connection> make_connection(const ConnectionConfig& cc, const Integration& integ,
                                            std::string* key, std::string* error);

// Copies of `routes` with connections added (or replaced) and removed.
std::shared_ptr<const Routes> with_connection(const Routes& routes, std::shared_ptr<Connection> c);
std::shared_ptr<const Routes> with_connections(const Routes& routes,
                                               const std::vector<std::shared_ptr<Connection>>& add);
std::shared_ptr<const Routes> without_connection(const Routes& routes, const std::string& id);

// After a reload: connections that are still the same account (id, integration, vars,
// grant) keep their tokens and refresh state; connections created at run time are kept.
std::shared_ptr<const Routes> carry_over(const Routes& old, std::shared_ptr<const Routes> fresh);

}  // namespace gw
