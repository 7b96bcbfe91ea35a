// Building a Runtime from the config file (config, policies, routes, TLS contexts), and
// --check: the same load, printed as a table.
#include "gateway/runtime_loader.hpp"

#include "gateway/auth/token_cache.hpp"
#include "gateway/observability/log.hpp"

#include <openssl/evp.h>

#include <sys/resource.h>

#include <fstream>
#include <iostream>
#include <limits>

namespace gw {

namespace asio = boost::asio;

namespace {

std::shared_ptr<asio::ssl::context> make_server_tls(const TlsServerConfig& tls) {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  ctx->use_certificate_chain_file(tls.cert_file);
  ctx->use_private_key_file(tls.key_file, asio::ssl::context::pem);
  if (!tls.client_ca_file.empty()) {
    ctx->load_verify_file(tls.client_ca_file);
    ctx->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
  }
  return ctx;
}

// SHA-256 over each file's name and contents; empty when one cannot be read (the context
// is then built afresh, and reports the problem).
std::string files_digest(std::initializer_list<std::string_view> paths) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!md || !EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr)) return {};
  for (auto path : paths) {
    EVP_DigestUpdate(md.get(), path.data(), path.size());
    EVP_DigestUpdate(md.get(), "", 1);
    if (path.empty()) continue;
    std::ifstream in{std::string(path), std::ios::binary};
    if (!in) return {};
    std::string contents((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) return {};
    auto size = std::to_string(contents.size());
    EVP_DigestUpdate(md.get(), size.data(), size.size() + 1);
    EVP_DigestUpdate(md.get(), contents.data(), contents.size());
  }
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (!EVP_DigestFinal_ex(md.get(), out, &n)) return {};
  return std::string(reinterpret_cast<const char*>(out), n);
}

// The TLS context `previous` holds when the files it was built from hash the same as
// `digest`; otherwise a new one from `build`, its failure reported as `where: what`.
template <class Build>
std::shared_ptr<asio::ssl::context> reuse_or_build(const std::string& digest,
                                                   const std::string& previous_digest,
                                                   std::shared_ptr<asio::ssl::context> previous,
                                                   const std::string& where, Build build) {
  if (previous && !digest.empty() && digest == previous_digest) return previous;
  try {
    return build();
  } catch (const std::exception& e) {
    throw ConfigError({where + ": " + e.what()});
  }
}

std::string pad(std::string s, std::size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
  return s;
}

}  // namespace

// Everything a start or reload builds; throws ConfigError on configuration problems. A
// TLS context whose files are unchanged since `previous` is carried over, not rebuilt.
std::shared_ptr<const Runtime> load_runtime(const std::filesystem::path& file,
                                            const Runtime* previous) {
  auto rt = std::make_shared<Runtime>();
  rt->config = load_config(file);
  auto policies = load_policies(rt->config.policy_dirs);
  rt->routes = build_routes(rt->config, std::move(policies));
  rt->client_tls_digest = files_digest({rt->config.upstream.ca_file.native()});
  rt->client_tls =
      reuse_or_build(rt->client_tls_digest, previous ? previous->client_tls_digest : std::string(),
                     previous ? previous->client_tls : nullptr,
                     rt->config.locate("upstream") + ": upstream.ca_file",
                     [&] { return make_client_tls(rt->config.upstream); });
  if (const auto& tls = rt->config.listen.tls) {
    rt->server_tls_digest = files_digest({tls->cert_file, tls->key_file, tls->client_ca_file});
    rt->server_tls = reuse_or_build(rt->server_tls_digest,
                                    previous ? previous->server_tls_digest : std::string(),
                                    previous ? previous->server_tls : nullptr,
                                    rt->config.file.filename().string() + ": listen.tls",
                                    [&] { return make_server_tls(*tls); });
  }
  return rt;
}

void print_problems(const ConfigError& e) {
  for (const auto& line : e.problems()) std::cerr << line << "\n";
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> widths;
  for (const auto& row : rows)
    for (std::size_t i = 0; i < row.size(); ++i) {
      if (widths.size() <= i) widths.push_back(0);
      widths[i] = std::max(widths[i], row[i].size());
    }
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) line += pad(row[i], widths[i] + 2);
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::cout << line << "\n";
  }
}

int check_config(const std::filesystem::path& config_file) {
  std::shared_ptr<const Runtime> rt;
  try {
    rt = load_runtime(config_file);
  } catch (const ConfigError& e) {
    print_problems(e);
    return 2;
  }
  const auto& cfg = rt->config;
  std::cout << config_file.string() << ": OK\n";
  std::cout << "listen " << cfg.listen.address << ":" << cfg.listen.port << ", admin "
            << cfg.admin.address << ":" << cfg.admin.port << ", store " << cfg.store.kind << ", "
            << rt->routes->policies.size() << " policies\n\n";
  std::vector<std::vector<std::string>> rows{
      {"INTEGRATION", "POLICY", "CREDENTIAL", "UPSTREAM", "CONNECTIONS", "DEFAULT"}};
  for (const auto& [name, integ] : rt->routes->integrations) {
    const auto& p = *integ->policy;
    std::string where;
    switch (p.inject.kind) {
      case InjectKind::header:
        where = "header " + p.inject.name;
        break;
      case InjectKind::query:
        where = "query " + p.inject.name;
        break;
      case InjectKind::basic:
        where = "basic auth";
        break;
    }
    std::string upstream = integ->config.overrides.upstream.empty()
                               ? p.upstream.source()
                               : integ->config.overrides.upstream;
    std::string conns;
    for (const auto& c : integ->connections)
      conns += (conns.empty() ? "" : ",") + c->id + "(" + c->grant + ")";
    rows.push_back({name, p.name, where, upstream, conns.empty() ? "-" : conns,
                    integ->default_connection ? integ->default_connection->id : "-"});
  }
  print_table(rows);
  return 0;
}

std::size_t callers_that_fit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return std::numeric_limits<std::size_t>::max();
  if (lim.rlim_cur < lim.rlim_max) {
    rlimit raised = lim;
    raised.rlim_cur = lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) lim = raised;
  }
  if (lim.rlim_cur == RLIM_INFINITY) return std::numeric_limits<std::size_t>::max();
  auto fds = static_cast<std::size_t>(lim.rlim_cur);
  return fds > 128 + 2 ? (fds - 128) / 2 : 1;
}

std::shared_ptr<const Routes> restore_connections(const std::map<std::string, TokenRecord>& records,
                                                  std::shared_ptr<const Routes> routes) {
  std::vector<std::shared_ptr<Connection>> created;
  for (const auto& [id, record] : records) {
    auto it = routes->connections.find(id);
    if (it != routes->connections.end() && it->second->integration == record.integration) {
      restore_record(*it->second, record);
    } else if (it == routes->connections.end() && record.created_at_runtime) {
      // Created by the admin API or onboarding: rebuilt from its record.
      auto iit = routes->integrations.find(record.integration);
      std::string key, error;
      ConnectionConfig cc{id, record.integration, record.vars, {}, record.grant, ""};
      auto conn = iit == routes->integrations.end()
                      ? nullptr
                      : make_connection(cc, *iit->second, &key, &error);
      if (!conn) {
        log::event(log::Level::warn,
                   "stored connection no longer fits the config; kept in "
                   "the store, not served",
                   {{"connection", id}, {"integration", record.integration}});
        continue;
      }
      conn->created_at_runtime = true;
      restore_record(*conn, record);
      created.push_back(std::move(conn));
    }
  }
  return created.empty() ? routes : with_connections(*routes, created);
}

}  // namespace gw
