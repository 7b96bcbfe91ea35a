// The gateway's configuration as plain structs (SPEC section 3). Produced by load_config();
// every value is already validated and every ${env:}/${file:} reference resolved.
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "gateway/config/units.hpp"

namespace gw {

// One or more configuration problems, each line "file:line: key: problem".
class ConfigError : public std::runtime_error {
 public:
  explicit ConfigError(std::vector<std::string> problems);
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  std::vector<std::string> problems_;
};

// Collects problems while loading so that one run reports all of them.
class Problems {
 public:
  void add(const std::string& file, int line, const std::string& key, const std::string& what);
  bool empty() const { return lines_.empty(); }
  // Throws ConfigError when any problem was added.
  void throw_if_any() const;
  const std::vector<std::string>& lines() const { return lines_; }

 private:
  std::vector<std::string> lines_;
};

using StringMap = std::map<std::string, std::string>;

struct Cidr {
  std::string text;
  bool v6 = false;
  std::array<std::uint8_t, 16> bytes{};
  int prefix = 0;
};

struct TlsServerConfig {
  std::string cert_file, key_file, client_ca_file;
};

struct ListenConfig {
  std::string address = "127.0.0.1";
  std::uint16_t port = 8080;
  std::vector<Cidr> allow_from;
  std::optional<TlsServerConfig> tls;
  bool insecure_open = false;
};

struct AdminConfig {
  std::string address = "127.0.0.1";
  std::uint16_t port = 9090;
  std::string token;  // empty: /admin/* answers 403
  std::string public_url;
};

// rediss:// (SPEC 3): extra trust anchors, and a client certificate if the server asks.
struct RedisTlsConfig {
  std::string ca_file, cert_file, key_file;
};

struct RedisConfig {
  std::string url = "redis://127.0.0.1:6379/0";  // rediss:// for TLS; USER@ for an ACL user
  RedisTlsConfig tls;
  std::string prefix = "gateway:";
  std::string password;
  Millis lock_lease{0};  // 0: twice refresh.timeout
};

struct StoreConfig {
  std::string kind = "file";  // file | redis | memory
  std::filesystem::path path = "./data/tokens.db";
  std::string key;  // base64 of 32 bytes
  std::vector<std::string> previous_keys;
  RedisConfig redis;
};

struct UpstreamConfig {
  std::filesystem::path ca_file;
  Millis connect_timeout{5000};
  Millis response_timeout{30000};
  Millis idle_timeout{60000};
  // Idle connections kept per host; 0 = as many as were busy at once (max_per_host bounds it).
  std::size_t max_idle_per_host = 0;
  // Vendor connections in use to one host, per process (an extension of SPEC 3): past it a
  // request waits up to connect_timeout for one to be free, then gets 503 upstream_busy.
  std::size_t max_per_host = 512;
};

struct LimitsConfig {
  std::uint64_t max_header_bytes = 16384;
  std::uint64_t max_body_bytes = 10ull * 1024 * 1024;
  std::uint64_t replay_body_bytes = 1024 * 1024;
  std::size_t max_connections = 10000;
  Millis header_timeout{10000};
  Millis idle_timeout{60000};
};

struct BackoffConfig {
  Millis initial{1000};
  Millis max{300000};
};

struct RefreshConfig {
  Millis skew{60000};
  Millis timeout{10000};
  BackoffConfig backoff;
  Millis failure_cooldown{30000};
};

struct LogConfig {
  std::string level = "info";  // debug | info | warn | error
  std::string format = "json";
  bool access_log = true;
};

struct AllowRule {
  std::vector<std::string> methods;  // empty: any
  std::vector<std::string> paths;    // glob: * within a segment, ** across segments
};

struct UrlOverrides {
  std::string upstream, token_url, refresh_url, authorize_url, revoke_url;
};

// What a vendor's 429/503 with Retry-After does to a connection (SPEC 5.1).
enum class RateLimitMode { enforce, observe, off };

struct IntegrationConfig {
  std::string name;
  std::string policy;
  std::string client_id, client_secret;
  StringMap vars;
  std::string default_connection;
  std::optional<std::vector<AllowRule>> allow;
  UrlOverrides overrides;
  RateLimitMode rate_limit = RateLimitMode::enforce;
  std::string where;  // "file:line" of the entry, for later cross-checks
};

struct ConnectionConfig {
  std::string id;
  std::string integration;
  StringMap vars;
  StringMap credentials;
  std::string grant;  // refresh_token | client_credentials | password | static | authorization_code
  std::string where;
};

// Connection health events (SPEC 6.10): POSTed as signed JSON.
struct NotifyConfig {
  std::string url;                  // empty: no events
  std::string secret;               // the HMAC-SHA256 key of X-Gateway-Signature
  std::vector<std::string> events;  // empty: all of them
  bool wants(std::string_view event) const;
};

struct Config {
  std::filesystem::path file;  // the config file itself
  ListenConfig listen;
  AdminConfig admin;
  unsigned threads = 0;
  std::vector<std::filesystem::path> policy_dirs;
  StoreConfig store;
  UpstreamConfig upstream;
  LimitsConfig limits;
  RefreshConfig refresh;
  Millis drain_timeout{20000};
  LogConfig log;
  NotifyConfig notify;
  std::vector<IntegrationConfig> integrations;
  std::vector<ConnectionConfig> connections;
  // The files behind ${file:} values: watched with the config and the policy folders.
  std::vector<std::filesystem::path> referenced_files;
  // "key.path" -> "file:line", for messages about cross-references found after parsing.
  std::map<std::string, std::string> where;

  std::string locate(const std::string& key) const;
};

// Reads and validates a config file; throws ConfigError listing every problem found.
Config load_config(const std::filesystem::path& file);

// Parses "10.0.0.0/8", "::1/128" or a bare address; nullopt when malformed.
std::optional<Cidr> parse_cidr(const std::string& text);
// A listen address on this machine's loopback: localhost, 127.0.0.0/8 or ::1.
bool is_loopback_address(const std::string& address);
bool cidr_contains(const Cidr& cidr, const std::array<std::uint8_t, 16>& addr, bool v6);

}  // namespace gw
