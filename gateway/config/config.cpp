#include "gateway/config/config.hpp"

#include <arpa/inet.h>

#include <regex>
#include <set>

#include "gateway/config/sections.hpp"
#include "gateway/config/url.hpp"
#include "gateway/config/yaml_reader.hpp"

namespace gw {

ConfigError::ConfigError(std::vector<std::string> problems)
    : std::runtime_error(problems.empty() ? "configuration error" : problems.front()),
      problems_(std::move(problems)) {}

void Problems::add(const std::string& file, int line, const std::string& key,
                   const std::string& what) {
  std::string text = file;
  if (line > 0) text += ":" + std::to_string(line);
  text += ": ";
  if (!key.empty()) text += key + ": ";
  lines_.push_back(text + what);
}

void Problems::throw_if_any() const {
  if (!lines_.empty()) throw ConfigError(lines_);
}

std::string Config::locate(const std::string& key) const {
  auto it = where.find(key);
  return it == where.end() ? file.filename().string() : it->second;
}

namespace {

const std::regex kIntegrationName("^[a-z0-9][a-z0-9-]*$");
const std::regex kConnectionId("^[A-Za-z0-9._-]{1,128}$");

class ConfigLoader {
 public:
  ConfigLoader(const std::filesystem::path& file, Problems& problems)
      : reader_(file, problems), problems_(problems) {
    cfg_.file = file;
  }

  Config run() {
    auto root = reader_.load();
    if (!root) return std::move(cfg_);
    if (root->IsNull()) return std::move(cfg_);
    if (!reader_.check_keys(
            *root, "",
            {"listen", "admin", "threads", "policies", "store", "upstream", "limits", "refresh",
             "shutdown", "log", "notify", "integrations", "connections"}))
      return std::move(cfg_);
    listen((*root)["listen"]);
    admin((*root)["admin"]);
    reader_.get_uint(*root, "", "threads", cfg_.threads, 256);
    policies(*root);
    store((*root)["store"]);
    upstream((*root)["upstream"]);
    limits((*root)["limits"]);
    refresh((*root)["refresh"]);
    if (auto n = (*root)["shutdown"]; n && reader_.check_keys(n, "shutdown", {"drain_timeout"}))
      reader_.get_duration(n, "shutdown", "drain_timeout", cfg_.drain_timeout);
    log((*root)["log"]);
    read_notify(reader_, (*root)["notify"], cfg_.notify);
    integrations((*root)["integrations"]);
    connections((*root)["connections"]);
    cfg_.referenced_files = reader_.files_read();
    return std::move(cfg_);
  }

 private:
  std::filesystem::path relative(const std::string& p) const {
    std::filesystem::path path(p);
    return path.is_relative() ? cfg_.file.parent_path() / path : path;
  }

  void listen(const YAML::Node& n) {
    if (!n) return;
    const std::string k = "listen";
    if (!reader_.check_keys(n, k, {"address", "port", "allow_from", "tls", "insecure_open"}))
      return;
    reader_.get(n, k, "address", cfg_.listen.address);
    reader_.get_uint(n, k, "port", cfg_.listen.port, 65535);
    reader_.get(n, k, "insecure_open", cfg_.listen.insecure_open);
    std::vector<std::string> cidrs;
    if (reader_.get_list(n, k, "allow_from", cidrs)) {
      for (std::size_t i = 0; i < cidrs.size(); ++i) {
        auto c = parse_cidr(cidrs[i]);
        if (!c)
          reader_.problem(
              n["allow_from"][i], k + ".allow_from[" + std::to_string(i) + "]",
              reader_.shown(n["allow_from"][i], cidrs[i]) + " is not an address or CIDR");
        else
          cfg_.listen.allow_from.push_back(*c);
      }
    }
    if (auto t = n["tls"]) {
      if (reader_.check_keys(t, "listen.tls", {"cert_file", "key_file", "client_ca_file"})) {
        TlsServerConfig tls;
        if (reader_.get(t, "listen.tls", "cert_file", tls.cert_file))
          tls.cert_file = relative(tls.cert_file).string();
        else
          reader_.problem(t, "listen.tls.cert_file", "is required");
        if (reader_.get(t, "listen.tls", "key_file", tls.key_file))
          tls.key_file = relative(tls.key_file).string();
        else
          reader_.problem(t, "listen.tls.key_file", "is required");
        if (reader_.get(t, "listen.tls", "client_ca_file", tls.client_ca_file))
          tls.client_ca_file = relative(tls.client_ca_file).string();
        cfg_.listen.tls = tls;
      }
    }
    bool guarded = !cfg_.listen.allow_from.empty() || cfg_.listen.insecure_open ||
                   (cfg_.listen.tls && !cfg_.listen.tls->client_ca_file.empty());
    if (!is_loopback_address(cfg_.listen.address) && !guarded)
      reader_.problem(n["address"] ? n["address"] : n, "listen.address",
                      "a non-loopback address needs allow_from, tls.client_ca_file or "
                      "insecure_open: true");
  }

  void admin(const YAML::Node& n) {
    if (!n) return;
    const std::string k = "admin";
    if (!reader_.check_keys(n, k, {"address", "port", "token", "public_url"})) return;
    reader_.get(n, k, "address", cfg_.admin.address);
    reader_.get_uint(n, k, "port", cfg_.admin.port, 65535);
    reader_.get(n, k, "token", cfg_.admin.token);
    if (reader_.get(n, k, "public_url", cfg_.admin.public_url)) {
      while (!cfg_.admin.public_url.empty() && cfg_.admin.public_url.back() == '/')
        cfg_.admin.public_url.pop_back();
      if (cfg_.admin.public_url.rfind("http://", 0) != 0 &&
          cfg_.admin.public_url.rfind("https://", 0) != 0)
        reader_.problem(n["public_url"], "admin.public_url", "must start with https:// or http://");
    }
  }

  void policies(const YAML::Node& root) {
    std::vector<std::string> dirs;
    if (reader_.get_list(root, "", "policies", dirs)) {
      for (auto& d : dirs) cfg_.policy_dirs.push_back(relative(d));
      cfg_.where["policies"] = reader_.where(root["policies"]);
    }
  }

  void store(const YAML::Node& n) {
    if (n) {
      const std::string k = "store";
      if (!reader_.check_keys(n, k, {"kind", "path", "key", "previous_keys", "redis"})) return;
      reader_.get(n, k, "kind", cfg_.store.kind);
      std::string path;
      if (reader_.get(n, k, "path", path)) cfg_.store.path = path;
      reader_.get(n, k, "key", cfg_.store.key);
      reader_.get_list(n, k, "previous_keys", cfg_.store.previous_keys);
      read_redis(reader_, n["redis"], cfg_.file.parent_path(), cfg_.store.redis);
      if (cfg_.store.kind != "file" && cfg_.store.kind != "redis" && cfg_.store.kind != "memory")
        reader_.problem(
            n["kind"], "store.kind",
            reader_.shown(n["kind"], cfg_.store.kind) + " is not one of file, redis, memory");
      if (cfg_.store.kind != "memory" && cfg_.store.key.empty())
        reader_.problem(n, "store.key", "is required for the " + cfg_.store.kind + " store");
    } else {
      problems_.add(reader_.file_name(), 0, "store.key", "is required for the file store");
    }
    cfg_.store.path = relative(cfg_.store.path.string());
  }

  void upstream(const YAML::Node& n) {
    if (!n) return;
    const std::string k = "upstream";
    if (!reader_.check_keys(n, k,
                            {"ca_file", "connect_timeout", "response_timeout", "idle_timeout",
                             "max_idle_per_host", "max_per_host"}))
      return;
    std::string ca;
    if (reader_.get(n, k, "ca_file", ca)) cfg_.upstream.ca_file = relative(ca);
    reader_.get_duration(n, k, "connect_timeout", cfg_.upstream.connect_timeout);
    reader_.get_duration(n, k, "response_timeout", cfg_.upstream.response_timeout);
    reader_.get_duration(n, k, "idle_timeout", cfg_.upstream.idle_timeout);
    reader_.get_uint(n, k, "max_idle_per_host", cfg_.upstream.max_idle_per_host, 100000);
    reader_.get_uint(n, k, "max_per_host", cfg_.upstream.max_per_host, 1000000);
    if (cfg_.upstream.max_per_host == 0)
      reader_.problem(n["max_per_host"], k + ".max_per_host", "must be at least 1");
  }

  void limits(const YAML::Node& n) {
    if (!n) return;
    const std::string k = "limits";
    if (!reader_.check_keys(n, k,
                            {"max_header_bytes", "max_body_bytes", "replay_body_bytes",
                             "max_connections", "header_timeout", "idle_timeout"}))
      return;
    auto& l = cfg_.limits;
    reader_.get_size(n, k, "max_header_bytes", l.max_header_bytes);
    reader_.get_size(n, k, "max_body_bytes", l.max_body_bytes);
    reader_.get_size(n, k, "replay_body_bytes", l.replay_body_bytes);
    reader_.get_uint(n, k, "max_connections", l.max_connections, 10'000'000);
    reader_.get_duration(n, k, "header_timeout", l.header_timeout);
    reader_.get_duration(n, k, "idle_timeout", l.idle_timeout);
    if (l.max_header_bytes < 1024 || l.max_header_bytes > 1024 * 1024)
      reader_.problem(n, "limits.max_header_bytes", "must be between 1KiB and 1MiB");
  }

  void refresh(const YAML::Node& n) {
    if (!n) return;
    const std::string k = "refresh";
    if (!reader_.check_keys(n, k, {"skew", "timeout", "backoff", "failure_cooldown"})) return;
    reader_.get_duration(n, k, "skew", cfg_.refresh.skew);
    reader_.get_duration(n, k, "timeout", cfg_.refresh.timeout);
    reader_.get_duration(n, k, "failure_cooldown", cfg_.refresh.failure_cooldown);
    if (auto b = n["backoff"]; b && reader_.check_keys(b, "refresh.backoff", {"initial", "max"})) {
      reader_.get_duration(b, "refresh.backoff", "initial", cfg_.refresh.backoff.initial);
      reader_.get_duration(b, "refresh.backoff", "max", cfg_.refresh.backoff.max);
    }
  }

  void log(const YAML::Node& n) {
    if (!n) return;
    if (!reader_.check_keys(n, "log", {"level", "format", "access_log"})) return;
    reader_.get(n, "log", "level", cfg_.log.level);
    reader_.get(n, "log", "format", cfg_.log.format);
    reader_.get(n, "log", "access_log", cfg_.log.access_log);
    static const std::set<std::string> levels{"debug", "info", "warn", "error"};
    if (!levels.count(cfg_.log.level))
      reader_.problem(n["level"], "log.level", "must be debug, info, warn or error");
    if (cfg_.log.format != "json") reader_.problem(n["format"], "log.format", "must be json");
  }

  void allow_rules(const YAML::Node& n, const std::string& k, IntegrationConfig& out) {
    if (!n.IsSequence()) {
      reader_.problem(n, k, "must be a list");
      return;
    }
    out.allow.emplace();
    for (std::size_t i = 0; i < n.size(); ++i) {
      std::string rk = k + "[" + std::to_string(i) + "]";
      if (!reader_.check_keys(n[i], rk, {"methods", "paths"})) continue;
      AllowRule rule;
      reader_.get_list(n[i], rk, "methods", rule.methods);
      reader_.get_list(n[i], rk, "paths", rule.paths);
      for (auto& p : rule.paths)
        if (p.empty() || p[0] != '/')
          reader_.problem(n[i]["paths"], rk + ".paths", "must start with /");
      out.allow->push_back(std::move(rule));
    }
  }

  void integrations(const YAML::Node& n) {
    if (!n) return;
    if (!n.IsSequence()) {
      reader_.problem(n, "integrations", "must be a list");
      return;
    }
    std::set<std::string> names;
    for (std::size_t i = 0; i < n.size(); ++i) {
      std::string k = "integrations[" + std::to_string(i) + "]";
      const YAML::Node& e = n[i];
      if (!reader_.check_keys(e, k,
                              {"name", "policy", "client_id", "client_secret", "vars",
                               "default_connection", "allow", "overrides", "rate_limit"}))
        continue;
      IntegrationConfig ic;
      ic.where = reader_.where(e);
      if (!reader_.get(e, k, "name", ic.name)) {
        reader_.problem(e, k + ".name", "is required");
      } else if (!std::regex_match(ic.name, kIntegrationName)) {
        reader_.problem(e["name"], k + ".name",
                        "\"" + ic.name + "\" must match ^[a-z0-9][a-z0-9-]*$");
      } else if (!names.insert(ic.name).second) {
        reader_.problem(e["name"], k + ".name", "duplicate integration \"" + ic.name + "\"");
      }
      if (!reader_.get(e, k, "policy", ic.policy)) ic.policy = ic.name;
      cfg_.where[k + ".policy"] = reader_.where(e["policy"] ? e["policy"] : e);
      reader_.get(e, k, "client_id", ic.client_id);
      reader_.get(e, k, "client_secret", ic.client_secret);
      reader_.get_map(e, k, "vars", ic.vars);
      cfg_.where[k + ".vars"] = reader_.where(e["vars"] ? e["vars"] : e);
      if (reader_.get(e, k, "default_connection", ic.default_connection))
        cfg_.where[k + ".default_connection"] = reader_.where(e["default_connection"]);
      if (std::string mode; reader_.get(e, k, "rate_limit", mode)) {
        if (mode == "enforce")
          ic.rate_limit = RateLimitMode::enforce;
        else if (mode == "observe")
          ic.rate_limit = RateLimitMode::observe;
        else if (mode == "off")
          ic.rate_limit = RateLimitMode::off;
        else
          reader_.problem(e["rate_limit"], k + ".rate_limit", "must be enforce, observe or off");
      }
      if (auto a = e["allow"]) allow_rules(a, k + ".allow", ic);
      if (auto o = e["overrides"]) {
        std::string ok = k + ".overrides";
        if (reader_.check_keys(
                o, ok, {"upstream", "token_url", "refresh_url", "authorize_url", "revoke_url"})) {
          reader_.get(o, ok, "upstream", ic.overrides.upstream);
          reader_.get(o, ok, "token_url", ic.overrides.token_url);
          reader_.get(o, ok, "refresh_url", ic.overrides.refresh_url);
          reader_.get(o, ok, "authorize_url", ic.overrides.authorize_url);
          reader_.get(o, ok, "revoke_url", ic.overrides.revoke_url);
          cfg_.where[ok] = reader_.where(o);
          // Every vendor URL is https (an http one would fail at run time, forever, after
          // --check passed); only the authorize URL, opened by the browser, may be http to
          // a loopback host.
          for (const auto& [name, url] :
               {std::pair<const char*, const std::string*>{"upstream", &ic.overrides.upstream},
                {"token_url", &ic.overrides.token_url},
                {"refresh_url", &ic.overrides.refresh_url},
                {"revoke_url", &ic.overrides.revoke_url},
                {"authorize_url", &ic.overrides.authorize_url}}) {
            if (url->empty()) continue;
            if (std::string_view(name) == "authorize_url" && is_loopback_http(*url)) continue;
            UpstreamTarget target;
            // The URL is not echoed: a user part could hold a password.
            if (!parse_upstream(url->substr(0, url->find('?')), target).empty())
              reader_.problem(o[name], ok + "." + name,
                              "must be an https URL with a host and no user or fragment");
          }
        }
      }
      cfg_.integrations.push_back(std::move(ic));
    }
  }

  void connections(const YAML::Node& n) {
    if (!n) return;
    if (!n.IsSequence()) {
      reader_.problem(n, "connections", "must be a list");
      return;
    }
    std::set<std::string> ids;
    for (std::size_t i = 0; i < n.size(); ++i) {
      std::string k = "connections[" + std::to_string(i) + "]";
      const YAML::Node& e = n[i];
      if (!reader_.check_keys(e, k, {"id", "integration", "vars", "credentials", "grant"}))
        continue;
      ConnectionConfig cc;
      cc.where = reader_.where(e);
      if (!reader_.get(e, k, "id", cc.id)) {
        reader_.problem(e, k + ".id", "is required");
      } else if (!std::regex_match(cc.id, kConnectionId)) {
        reader_.problem(e["id"], k + ".id",
                        reader_.shown(e["id"], cc.id) + " must match ^[A-Za-z0-9._-]{1,128}$");
      } else if (!ids.insert(cc.id).second) {
        reader_.problem(e["id"], k + ".id", "duplicate connection \"" + cc.id + "\"");
      }
      if (!reader_.get(e, k, "integration", cc.integration))
        reader_.problem(e, k + ".integration", "is required");
      cfg_.where[k + ".integration"] = reader_.where(e["integration"] ? e["integration"] : e);
      reader_.get_map(e, k, "vars", cc.vars);
      cfg_.where[k + ".vars"] = reader_.where(e["vars"] ? e["vars"] : e);
      reader_.get_map(e, k, "credentials", cc.credentials);
      cfg_.where[k + ".credentials"] = reader_.where(e["credentials"] ? e["credentials"] : e);
      if (!reader_.get(e, k, "grant", cc.grant)) cc.grant = "static";
      cfg_.where[k + ".grant"] = reader_.where(e["grant"] ? e["grant"] : e);
      static const std::set<std::string> grants{"refresh_token", "client_credentials", "password",
                                                "static", "authorization_code"};
      if (!grants.count(cc.grant))
        reader_.problem(e["grant"], k + ".grant",
                        "\"" + cc.grant +
                            "\" is not one of refresh_token, client_credentials, password, "
                            "static, authorization_code");
      cfg_.connections.push_back(std::move(cc));
    }
  }

  YamlReader reader_;
  Problems& problems_;
  Config cfg_;
};

}  // namespace

Config load_config(const std::filesystem::path& file) {
  Problems problems;
  ConfigLoader loader(file, problems);
  Config cfg = loader.run();
  problems.throw_if_any();
  return cfg;
}

}  // namespace gw
