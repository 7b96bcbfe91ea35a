// Durable token records (SPEC 6.5-6.7): one record per connection, sealed with AES-256-GCM
// (connection id as associated data). The file kind replaces its file atomically (write,
// fsync, rename, fsync folder) so a kill -9 at any moment leaves the old or the new file.
#pragma once
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

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

class RefreshLock;

class TokenStore {
 public:
  virtual ~TokenStore() = default;
  // The store's cluster lock when it coordinates replicas (redis), else null.
  virtual RefreshLock* cluster_lock() { return nullptr; }
  virtual std::map<std::string, TokenRecord> load() = 0;
  // Durable when it returns true.
  virtual bool save(const TokenRecord& record) = 0;
  virtual bool remove(const std::string& id) = 0;
  virtual bool reachable() const { return true; }
  // Vendor cool-downs shared between replicas (SPEC 5.1): the redis store publishes each and
  // hands every one it hears of (its own included) to the handler, from its own thread. A
  // store of one process shares nothing.
  virtual boost::asio::awaitable<void> publish_cooldown(std::string id, std::int64_t until_ms);
  virtual void on_cooldown(std::function<void(const std::string& id, std::int64_t until_ms)>) {}
  // Health events (SPEC 6.10): true when this replica is the one to send event `id` (the
  // redis store lets the first claim win for an hour; unreachable, it says true: a duplicate
  // the receiver drops by id beats a lost event). A store of one process: always true.
  virtual boost::asio::awaitable<bool> claim_event(std::string id);
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

// Cluster-wide single flight for refreshes (the redis store): a lease lock per connection
// and the latest record, read without blocking an event loop.
class RefreshLock {
 public:
  // settling: the store has just come back, and replicas that could not save during the
  // outage are given time to do so before anyone refreshes (they hold the newest tokens).
  enum class Outcome { acquired, held_by_other, settling, unavailable };
  virtual ~RefreshLock() = default;
  virtual boost::asio::awaitable<Outcome> acquire(std::string id, std::string owner,
                                                  Millis lease) = 0;
  virtual boost::asio::awaitable<bool> renew(std::string id, std::string owner, Millis lease) = 0;
  // True when the lease is gone (released, or no longer ours); false when the store did not
  // answer.
  virtual boost::asio::awaitable<bool> release(std::string id, std::string owner) = 0;
  // nullopt when there is no record or the store is unreachable (`reachable` says which).
  virtual boost::asio::awaitable<std::optional<TokenRecord>> read(std::string id,
                                                                  bool* reachable) = 0;
  // Changes of `id`'s record or lock seen so far; wait_update returns once it differs from
  // `seen` (another replica saved or released) or after `poll` at most, the fallback.
  virtual std::uint64_t update_generation(const std::string& id) = 0;
  virtual boost::asio::awaitable<void> wait_update(std::string id, std::uint64_t seen,
                                                   Millis poll) = 0;
};

class RedisClient;
struct RedisReply;

// Records as Redis hashes {version, sealed} under `{prefix}record:{id}`, written with a
// compare-and-set on the version (a stale writer never overwrites a newer token); locks as
// `{prefix}lock:{id}` with SET NX PX and owner-checked renew/release scripts.
class RedisStore final : public TokenStore, public RefreshLock {
 public:
  RedisStore(const StoreConfig& config, Millis timeout);
  ~RedisStore() override;
  RefreshLock* cluster_lock() override { return this; }
  std::map<std::string, TokenRecord> load() override;
  bool save(const TokenRecord& record) override;
  bool remove(const std::string& id) override;
  bool reachable() const override;
  boost::asio::awaitable<void> publish_cooldown(std::string id, std::int64_t until_ms) override;
  void on_cooldown(std::function<void(const std::string&, std::int64_t)> handler) override;
  boost::asio::awaitable<bool> claim_event(std::string id) override;

  boost::asio::awaitable<Outcome> acquire(std::string id, std::string owner, Millis lease) override;
  boost::asio::awaitable<bool> renew(std::string id, std::string owner, Millis lease) override;
  boost::asio::awaitable<bool> release(std::string id, std::string owner) override;
  boost::asio::awaitable<std::optional<TokenRecord>> read(std::string id, bool* reachable) override;
  std::uint64_t update_generation(const std::string& id) override;
  boost::asio::awaitable<void> wait_update(std::string id, std::uint64_t seen,
                                           Millis poll) override;
  // Whether change notifications (`{prefix}updates` pub/sub) are flowing.
  bool subscribed() const;

 private:
  std::optional<TokenRecord> open_record(const std::string& id,
                                         const std::string& sealed_b64) const;

  // Replication (SPEC 6.8): whether ROLE is refused to our user (then saves cannot wait
  // for a replica, said once in the log), and how long a save waits for one (WAIT).
  bool saved_without_replicas(const RedisReply& role);
  std::atomic<bool> role_refused_{false};
  Millis replica_wait_{1000};
  std::string prefix_, key_;
  std::vector<std::string> previous_keys_;
  struct Notifications;  // generations and the timers of replicas waiting on them
  std::shared_ptr<Notifications> notifications_;
  std::unique_ptr<RedisClient> redis_;  // last: its thread stops before the rest goes
};

std::unique_ptr<TokenStore> make_store(const StoreConfig& config, Millis redis_timeout);

}  // namespace gw
