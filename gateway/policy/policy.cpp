#include "gateway/policy/policy.hpp"

#include <set>

#include <regex>

#include <algorithm>
#include <cctype>
#include <vector>

#include "gateway/config/url.hpp"
#include "gateway/config/yaml_reader.hpp"
#include "gateway/policy/token_response.hpp"

namespace gw {

bool is_builtin_placeholder(std::string_view name) {
  return name == "client_id" || name == "client_secret" || name == "access_token" ||
         name == "redirect_uri" || name == "state";
}

namespace {

class PolicyLoader {
 public:
  PolicyLoader(const std::filesystem::path& file, Problems& problems)
      : reader_(file, problems, /*references=*/false), file_(file) {}

  std::shared_ptr<Policy> run() {
    auto root = reader_.load();
    if (!root) return nullptr;
    if (!reader_.check_keys(*root, "",
                            {"name", "title", "docs", "vars", "upstream", "oauth", "inject",
                             "reauth_on", "replay"}))
      return nullptr;
    auto p = std::make_shared<Policy>();
    p->file = file_;
    if (!reader_.get(*root, "", "name", p->name)) reader_.problem(*root, "name", "is required");
    reader_.get(*root, "", "title", p->title);
    reader_.get(*root, "", "docs", p->docs);
    vars((*root)["vars"], *p);
    p->upstream = required_template(*root, "", "upstream");
    check_host_vars(p->upstream, (*root)["upstream"], "upstream", *p);
    if (auto o = (*root)["oauth"]) oauth(o, *p);
    inject((*root)["inject"], *p);
    std::vector<std::string> codes;
    if (reader_.get_list(*root, "", "reauth_on", codes)) {
      p->reauth_on.clear();
      for (auto& c : codes) {
        unsigned code = 0;
        try {
          code = static_cast<unsigned>(std::stoul(c));
        } catch (...) {
        }
        if (code < 400 || code > 599)
          reader_.problem((*root)["reauth_on"], "reauth_on",
                          "\"" + c + "\" is not a 4xx/5xx status");
        else
          p->reauth_on.insert(code);
      }
    }
    std::string replay;
    if (reader_.get(*root, "", "replay", replay)) {
      if (replay == "all")
        p->replay = ReplayMode::all;
      else if (replay == "idempotent")
        p->replay = ReplayMode::idempotent;
      else
        reader_.problem((*root)["replay"], "replay", "must be all or idempotent");
    }
    return p;
  }

 private:
  Template compile(const YAML::Node& node, const std::string& key, const std::string& text) {
    std::string error;
    auto t = Template::compile(text, &error);
    if (!t) {
      reader_.problem(node, key, error);
      return {};
    }
    return *t;
  }

  Template required_template(const YAML::Node& map, const std::string& path, const char* key) {
    std::string text;
    if (!reader_.get(map, path, key, text)) {
      reader_.problem(map, YamlReader::join(path, key), "is required");
      return {};
    }
    return compile(map[key], YamlReader::join(path, key), text);
  }

  std::optional<Template> optional_template(const YAML::Node& map, const std::string& path,
                                            const char* key) {
    std::string text;
    if (!reader_.get(map, path, key, text)) return std::nullopt;
    return compile(map[key], YamlReader::join(path, key), text);
  }

  // A placeholder in a URL's scheme or host (also one standing for the URL's start, as in
  // "{instance_url}/services/data") must be a declared var with a pattern, so a value such as
  // "evil.com/x#" can never steer a request (and its credential) to another host. A literal
  // scheme must be https; an authorize URL, which only the browser opens, may be http for a
  // loopback host.
  void check_host_vars(const Template& t, const YAML::Node& node, const std::string& key,
                       const Policy& p, bool browser = false) {
    for (const auto& name : t.host_placeholders()) {
      auto it = p.vars.find(name);
      if (it == p.vars.end() || !it->second.pattern)
        reader_.problem(node, key,
                        "placeholder {" + name + "} in the host must be a var with a pattern");
    }
    const auto& src = t.source();
    auto scheme_end = src.find("://");
    if (scheme_end == std::string::npos || src.find('{') < scheme_end) return;
    auto scheme = src.substr(0, scheme_end);
    if (scheme == "https") return;
    auto host =
        src.substr(scheme_end + 3, src.find_first_of("/?#", scheme_end + 3) - (scheme_end + 3));
    if (!(browser && scheme == "http" && is_loopback_authority(host)))
      reader_.problem(node, key, "must be an https URL (\"" + src + "\")");
  }

  TemplateParams params(const YAML::Node& map, const std::string& path) {
    TemplateParams out;
    StringMap raw;
    if (!reader_.get_map(map, path, "params", raw)) return out;
    for (auto& [k, v] : raw)
      out.emplace_back(k, compile(map["params"], YamlReader::join(path, "params." + k), v));
    return out;
  }

  std::optional<ClientAuth> client_auth(const YAML::Node& map, const std::string& path) {
    std::string text;
    if (!reader_.get(map, path, "client_auth", text)) return std::nullopt;
    if (text == "basic") return ClientAuth::basic;
    if (text == "basic_raw") return ClientAuth::basic_raw;
    if (text == "body") return ClientAuth::body;
    if (text == "query") return ClientAuth::query;
    if (text == "none") return ClientAuth::none;
    reader_.problem(map["client_auth"], YamlReader::join(path, "client_auth"),
                    "must be basic, basic_raw, body, query or none");
    return std::nullopt;
  }

  void vars(const YAML::Node& n, Policy& p) {
    if (!n || n.IsNull()) return;
    if (!n.IsMap()) {
      reader_.problem(n, "vars", "must be a mapping");
      return;
    }
    for (const auto& item : n) {
      auto key = reader_.key_name(item.first, "vars");
      if (!key) continue;
      const std::string& name = *key;
      std::string k = "vars." + name;
      if (is_builtin_placeholder(name)) {
        reader_.problem(item.first, k, "is a built-in placeholder; a var may not be named so");
        continue;
      }
      if (!reader_.check_keys(item.second, k, {"pattern", "required", "default"})) continue;
      VarSpec spec;
      if (reader_.get(item.second, k, "pattern", spec.pattern_text)) {
        auto why = pattern_limits_problem(spec.pattern_text);
        if (why.empty()) {
          try {
            spec.pattern.emplace(spec.pattern_text, std::regex::ECMAScript);
          } catch (const std::regex_error& e) {
            why = std::string("bad regex: ") + e.what();
          }
        } else {
          why = "regex " + why;
        }
        if (!why.empty()) reader_.problem(item.second["pattern"], k + ".pattern", why);
      }
      reader_.get(item.second, k, "required", spec.required);
      std::string def;
      if (reader_.get(item.second, k, "default", def)) spec.default_value = def;
      p.vars[name] = std::move(spec);
    }
  }

  void oauth(const YAML::Node& n, Policy& p) {
    const std::string k = "oauth";
    if (!reader_.check_keys(n, k,
                            {"authorize", "token", "refresh", "grants", "default_expires_in",
                             "refresh_token_lifetime", "revoke", "token_response"}))
      return;
    OAuthSpec o;
    if (auto a = n["authorize"];
        a && reader_.check_keys(a, k + ".authorize", {"url", "params", "state", "pkce"})) {
      o.authorize.url = required_template(a, k + ".authorize", "url");
      check_host_vars(o.authorize.url, a["url"], k + ".authorize.url", p, /*browser=*/true);
      o.authorize.params = params(a, k + ".authorize");
      std::string state;
      if (reader_.get(a, k + ".authorize", "state", state)) {
        if (state == "param")
          o.authorize.state = StateMode::param;
        else if (state == "cookie")
          o.authorize.state = StateMode::cookie;
        else
          reader_.problem(a["state"], k + ".authorize.state", "must be param or cookie");
      }
      std::string pkce;
      if (reader_.get(a, k + ".authorize", "pkce", pkce)) {
        if (pkce == "S256")
          o.authorize.pkce = PkceMode::s256;
        else if (pkce == "none")
          o.authorize.pkce = PkceMode::none;
        else
          reader_.problem(a["pkce"], k + ".authorize.pkce", "must be S256 or none");
      }
      // The gateway sets the PKCE parameters itself.
      if (o.authorize.pkce == PkceMode::s256)
        for (const auto& [name, tpl] : o.authorize.params)
          if (name == "code_challenge" || name == "code_challenge_method")
            reader_.problem(a["params"], k + ".authorize.params." + name,
                            "is set by the gateway (pkce: S256)");
      // The state must reach the vendor, or every callback fails after the user consented.
      bool sends_state = false;
      for (const auto& [name, tpl] : o.authorize.params)
        sends_state = sends_state || tpl.uses("state");
      if (o.authorize.state == StateMode::param && !sends_state)
        reader_.problem(a, k + ".authorize.params",
                        "state: param needs \"{state}\" among the authorize params");
    }
    auto t = n["token"];
    if (!t) {
      reader_.problem(n, k + ".token", "is required");
    } else if (reader_.check_keys(t, k + ".token",
                                  {"url", "method", "client_auth", "body", "headers"})) {
      o.token_url = required_template(t, k + ".token", "url");
      check_host_vars(o.token_url, t["url"], k + ".token.url", p);
      if (reader_.get(t, k + ".token", "method", o.token_method) && o.token_method != "POST" &&
          o.token_method != "GET")
        reader_.problem(t["method"], k + ".token.method", "must be POST or GET");
      if (auto ca = client_auth(t, k + ".token")) o.client_auth = *ca;
      if (std::string body; reader_.get(t, k + ".token", "body", body)) {
        if (body == "json")
          o.token_body_json = true;
        else if (body != "form")
          reader_.problem(t["body"], k + ".token.body", "must be form or json");
        if (o.token_body_json && o.token_method != "POST")
          reader_.problem(t["body"], k + ".token.body", "json needs method: POST");
      }
      StringMap headers;
      if (reader_.get_map(t, k + ".token", "headers", headers))
        for (auto& [name, value] : headers) {
          std::string where = k + ".token.headers." + name;
          static const std::regex kToken("^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$");
          // The gateway frames the request and authenticates the client itself.
          static const std::set<std::string> kReserved{"host", "content-type", "content-length",
                                                       "transfer-encoding", "connection"};
          std::string lower = name;
          for (auto& ch : lower)
            ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
          if (!std::regex_match(name, kToken))
            reader_.problem(t["headers"], where, "is not a header name");
          else if (kReserved.count(lower))
            reader_.problem(t["headers"], where, "is set by the gateway");
          else
            o.token_headers.emplace_back(name, compile(t["headers"], where, value));
        }
    }
    if (auto r = n["refresh"]; r && reader_.check_keys(r, k + ".refresh", {"url"})) {
      o.refresh_url = optional_template(r, k + ".refresh", "url");
      if (o.refresh_url) check_host_vars(*o.refresh_url, r["url"], k + ".refresh.url", p);
    }
    if (auto g = n["grants"]) {
      if (!g.IsMap()) {
        reader_.problem(g, k + ".grants", "must be a mapping");
      } else {
        for (const auto& item : g) {
          auto key = reader_.key_name(item.first, k + ".grants");
          if (!key) continue;
          const std::string& grant = *key;
          std::string gk = k + ".grants." + grant;
          static const std::set<std::string> known{"authorization_code", "refresh_token",
                                                   "client_credentials", "password"};
          if (!known.count(grant)) {
            reader_.problem(item.first, gk,
                            "unknown grant (authorization_code, refresh_token, "
                            "client_credentials, password; implicit is not supported)");
            continue;
          }
          GrantSpec spec;
          if (!item.second.IsNull()) {
            if (!reader_.check_keys(item.second, gk, {"params", "client_auth", "grant_type"}))
              continue;
            spec.params = params(item.second, gk);
            spec.client_auth = client_auth(item.second, gk);
            std::string other;
            if (reader_.get(item.second, gk, "grant_type", other)) spec.grant_type = other;
            // What the gateway sets itself for this grant: a param of that name would be
            // silently dropped. (Comm100's client_credentials needs a redirect_uri of its own,
            // which the gateway does not set for that grant.)
            std::set<std::string> reserved{"grant_type", "client_assertion",
                                           "client_assertion_type"};
            if (grant == "authorization_code")
              reserved.insert({"code", "redirect_uri", "code_verifier"});
            if (grant == "refresh_token") reserved.insert("refresh_token");
            for (const auto& [name, tpl] : spec.params)
              if (reserved.count(name))
                reader_.problem(item.second["params"], gk + ".params." + name,
                                "is set by the gateway" +
                                    std::string(name == "grant_type"
                                                    ? "; write grant_type: beside params instead"
                                                    : ""));
          }
          o.grants[grant] = std::move(spec);
        }
      }
    }
    Millis d{};
    if (reader_.get_duration(n, k, "default_expires_in", d)) o.default_expires_in = d;
    if (reader_.get_duration(n, k, "refresh_token_lifetime", d)) o.refresh_token_lifetime = d;
    if (auto m = n["token_response"])
      read_token_response(reader_, m, k + ".token_response", o.token_response);
    if (auto r = n["revoke"]; r && reader_.check_keys(r, k + ".revoke", {"url", "method"})) {
      o.revoke_url = required_template(r, k + ".revoke", "url");
      check_host_vars(*o.revoke_url, r["url"], k + ".revoke.url", p);
      reader_.get(r, k + ".revoke", "method", o.revoke_method);
    }
    p.oauth = std::move(o);
  }

  void inject(const YAML::Node& n, Policy& p) {
    if (!n) {
      reader_.problem(YAML::Node(), "inject", "is required");
      return;
    }
    if (!reader_.check_keys(n, "inject", {"header", "query", "basic"})) return;
    int kinds = (n["header"] ? 1 : 0) + (n["query"] ? 1 : 0) + (n["basic"] ? 1 : 0);
    if (kinds != 1) {
      reader_.problem(n, "inject", "needs exactly one of header, query, basic");
      return;
    }
    auto& in = p.inject;
    if (auto h = n["header"]) {
      in.kind = InjectKind::header;
      if (!reader_.check_keys(h, "inject.header", {"name", "value"})) return;
      if (!reader_.get(h, "inject.header", "name", in.name))
        reader_.problem(h, "inject.header.name", "is required");
      in.value = required_template(h, "inject.header", "value");
    } else if (auto q = n["query"]) {
      in.kind = InjectKind::query;
      if (!reader_.check_keys(q, "inject.query", {"name", "value"})) return;
      if (!reader_.get(q, "inject.query", "name", in.name))
        reader_.problem(q, "inject.query.name", "is required");
      in.value = required_template(q, "inject.query", "value");
    } else if (auto b = n["basic"]) {
      in.kind = InjectKind::basic;
      in.name = "Authorization";
      if (!reader_.check_keys(b, "inject.basic", {"username", "password"})) return;
      in.username = required_template(b, "inject.basic", "username");
      in.password = required_template(b, "inject.basic", "password");
    }
  }

  YamlReader reader_;
  std::filesystem::path file_;
};

}  // namespace

PolicyMap load_policies(const std::vector<std::filesystem::path>& dirs) {
  Problems problems;
  PolicyMap out;
  for (const auto& dir : dirs) {
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) {
      problems.add(dir.string(), 0, "policies", "is not a folder");
      continue;
    }
    std::vector<std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      auto ext = entry.path().extension();
      if (entry.is_regular_file() && (ext == ".yaml" || ext == ".yml"))
        files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    for (const auto& file : files) {
      PolicyLoader loader(file, problems);
      auto p = loader.run();
      if (!p || p->name.empty()) continue;
      if (out.count(p->name)) {
        problems.add(file.filename().string(), 0, "name",
                     "policy \"" + p->name + "\" is defined twice");
        continue;
      }
      out[p->name] = std::move(p);
    }
  }
  problems.throw_if_any();
  return out;
}

}  // namespace gw
