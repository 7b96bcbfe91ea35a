// Durable token records (SPEC 6.5-6.7): one record per connection, sealed with AES-256-GCM
// (connection id as associated data). The file kind replaces its file atomically (write,
// fsync, rename, fsync folder) so a kill -9 at any moment leaves the old or the new file.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "gateway/config/config.hpp"

namespace gw {

struct TokenRecord {
  std::string id, integration, grant;
  StringMap vars;  // for connections created at run time
  bool created_at_runtime = false;
  std::string access_token, refresh_token;
  std::int64_t issued_at_ms = 0, expires_at_ms = 0;  // 0: never expires
  std::uint64_t version = 0;
  std::string state;  // "ready", "needs_reauth", ...
  std::string last_error;
};

// A store that cannot be opened: bad key, damaged file. Stops the start (exit 1).
class StoreError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class TokenStore {
 public:
  virtual ~TokenStore() = default;
  virtual std::map<std::string, TokenRecord> load() = 0;
  // Durable when it returns true.
  virtual bool save(const TokenRecord& record) = 0;
  virtual bool remove(const std::string& id) = 0;
  virtual bool reachable() const { return true; }
};

class MemoryStore final : public TokenStore {
 public:
  std::map<std::string, TokenRecord> load() override;
  bool save(const TokenRecord& record) override;
  bool remove(const std::string& id) override;

 private:
  std::mutex mutex_;
  std::map<std::string, TokenRecord> records_;
};

class FileStore final : public TokenStore {
 public:
  // Throws StoreError for a malformed key.
  FileStore(std::filesystem::path path, const std::string& key_b64,
            const std::vector<std::string>& previous_keys_b64);
  // Throws StoreError when the file exists but cannot be decrypted or parsed.
  std::map<std::string, TokenRecord> load() override;
  bool save(const TokenRecord& record) override;
  bool remove(const std::string& id) override;

 private:
  bool write_locked();

  std::filesystem::path path_;
  std::string key_;
  std::vector<std::string> previous_keys_;
  std::mutex mutex_;
  std::map<std::string, std::string> sealed_;  // id -> base64(nonce||ct||tag), as on disk
};

std::unique_ptr<TokenStore> make_store(const StoreConfig& config);

}  // namespace gw
