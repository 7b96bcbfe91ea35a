// Building a Runtime from the config file, and the --check report.
#pragma once
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "gateway/auth/token_store.hpp"
#include "gateway/config/config.hpp"
#include "gateway/proxy/proxy.hpp"

namespace gw {

// Everything a start or reload builds; throws ConfigError on configuration problems. A TLS
// context whose files are unchanged since `previous` is carried over, not rebuilt.
std::shared_ptr<const Runtime> load_runtime(const std::filesystem::path& file,
                                            const Runtime* previous = nullptr);

// The store wins over the config's bootstrap credentials: it holds the newer, possibly
// rotated, tokens. Publishes each record on its connection, and rebuilds the connections the
// admin API or onboarding created (a record that no longer fits the config is kept in the
// store, not served). Returns `routes` with those added.
std::shared_ptr<const Routes> restore_connections(const std::map<std::string, TokenRecord>& records,
                                                  std::shared_ptr<const Routes> routes);

// Raises the descriptor soft limit to the hard one and returns how many callers fit in it:
// each holds its socket and at most one vendor connection; the admin listener, the store,
// the log and the event loops keep 128 more.
std::size_t callers_that_fit();

// One line per problem, to stderr.
void print_problems(const ConfigError& e);
// Rows as aligned columns, to stdout.
void print_table(const std::vector<std::vector<std::string>>& rows);

}  // namespace gw
