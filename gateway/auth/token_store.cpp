#include "gateway/auth/token_store.hpp"

#include <charconv>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fstream>
#include <list>
#include <nlohmann/json.hpp>
#include <sstream>

#include "gateway/auth/crypto.hpp"
#include "gateway/auth/redis_client.hpp"

namespace gw {

namespace {

nlohmann::json to_json(const TokenRecord& r) {
  return {{"id", r.id},
          {"integration", r.integration},
          {"grant", r.grant},
          {"vars", r.vars},
          {"created_at_runtime", r.created_at_runtime},
          {"access_token", r.access_token},
          {"refresh_token", r.refresh_token},
          {"issued_at_ms", r.issued_at_ms},
          {"expires_at_ms", r.expires_at_ms},
          {"version", r.version},
          {"state", r.state},
          {"last_error", r.last_error}};
}

TokenRecord from_json(const nlohmann::json& j) {
  TokenRecord r;
  r.id = j.at("id").get<std::string>();
  r.integration = j.value("integration", "");
  r.grant = j.value("grant", "");
  r.vars = j.value("vars", StringMap{});
  r.created_at_runtime = j.value("created_at_runtime", false);
  r.access_token = j.value("access_token", "");
  r.refresh_token = j.value("refresh_token", "");
  r.issued_at_ms = j.value("issued_at_ms", std::int64_t{0});
  r.expires_at_ms = j.value("expires_at_ms", std::int64_t{0});
  r.version = j.value("version", std::uint64_t{0});
  r.state = j.value("state", "");
  r.last_error = j.value("last_error", "");
  return r;
}

std::string decode_key(const std::string& b64, const std::string& what) {
  auto key = crypto::unbase64(b64);
  if (!key || key->size() != crypto::kKeyBytes)
    throw StoreError(what + " must be the base64 of 32 bytes (openssl rand -base64 32)");
  return *key;
}

bool write_all(int fd, const std::string& data) {
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

std::map<std::string, TokenRecord> MemoryStore::load() {
  std::lock_guard lock(mutex_);
  return records_;
}

bool MemoryStore::save(const TokenRecord& record) {
  std::lock_guard lock(mutex_);
  records_[record.id] = record;
  return true;
}

bool MemoryStore::remove(const std::string& id) {
  std::lock_guard lock(mutex_);
  records_.erase(id);
  return true;
}

FileStore::FileStore(std::filesystem::path path, const std::string& key_b64,
                     const std::vector<std::string>& previous_keys_b64)
    : path_(std::move(path)), key_(decode_key(key_b64, "store.key")) {
  for (std::size_t i = 0; i < previous_keys_b64.size(); ++i)
    previous_keys_.push_back(
        decode_key(previous_keys_b64[i], "store.previous_keys[" + std::to_string(i) + "]"));
}

std::map<std::string, TokenRecord> FileStore::load() {
  std::lock_guard lock(mutex_);
  std::map<std::string, TokenRecord> out;
  std::error_code ec;
  if (!std::filesystem::exists(path_, ec)) return out;
  std::ifstream in(path_, std::ios::binary);
  if (!in) throw StoreError("cannot read the token store " + path_.string());
  std::stringstream ss;
  ss << in.rdbuf();
  auto doc = nlohmann::json::parse(ss.str(), nullptr, false);
  if (!doc.is_object() || doc.value("format", 0) != 1 || !doc.contains("records") ||
      !doc["records"].is_object())
    throw StoreError("the token store " + path_.string() +
                     " is damaged (not a gateway token store); it was left untouched");
  bool rekey = false;
  for (auto it = doc["records"].begin(); it != doc["records"].end(); ++it) {
    const std::string& id = it.key();
    auto sealed = it->is_string() ? crypto::unbase64(it->get<std::string>()) : std::nullopt;
    if (!sealed)
      throw StoreError("the token store " + path_.string() + " is damaged (record " + id +
                       "); it was left untouched");
    auto plain = crypto::open(key_, *sealed, id);
    if (!plain) {
      for (const auto& old : previous_keys_) {
        plain = crypto::open(old, *sealed, id);
        if (plain) {
          rekey = true;
          break;
        }
      }
    }
    if (!plain)
      throw StoreError("cannot decrypt the token store " + path_.string() +
                       " with store.key or store.previous_keys (wrong key, or a damaged "
                       "file); it was left untouched");
    auto j = nlohmann::json::parse(*plain, nullptr, false);
    if (!j.is_object() || !j.contains("id") || j["id"] != id)
      throw StoreError("the token store " + path_.string() + " is damaged (record " + id + ")");
    out[id] = from_json(j);
    sealed_[id] = it->get<std::string>();
  }
  if (rekey) {
    // Records sealed with a previous key are sealed again with the current one.
    for (const auto& [id, rec] : out)
      sealed_[id] = crypto::base64(crypto::seal(key_, to_json(rec).dump(), id));
    if (!write_locked()) throw StoreError("cannot rewrite the token store " + path_.string());
  }
  return out;
}

bool FileStore::save(const TokenRecord& record) {
  std::lock_guard lock(mutex_);
  sealed_[record.id] = crypto::base64(crypto::seal(key_, to_json(record).dump(), record.id));
  return write_locked();
}

bool FileStore::remove(const std::string& id) {
  std::lock_guard lock(mutex_);
  sealed_.erase(id);
  return write_locked();
}

bool FileStore::write_locked() {
  nlohmann::json doc = {{"format", 1}, {"cipher", "AES-256-GCM"}, {"records", sealed_}};
  std::string data = doc.dump(1) + "\n";
  auto dir = path_.parent_path();
  if (dir.empty()) dir = ".";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  auto tmp = path_;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  bool ok = write_all(fd, data) && ::fsync(fd) == 0;
  ok = (::close(fd) == 0) && ok;
  if (!ok || ::rename(tmp.c_str(), path_.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return false;
  }
  ::chmod(path_.c_str(), 0600);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);  // the rename itself is durable only once the folder is
    ::close(dfd);
  }
  return true;
}

std::unique_ptr<TokenStore> make_store(const StoreConfig& config, Millis redis_timeout) {
  if (config.kind == "memory") return std::make_unique<MemoryStore>();
  if (config.kind == "file")
    return std::make_unique<FileStore>(config.path, config.key, config.previous_keys);
  return std::make_unique<RedisStore>(config, redis_timeout);
}

namespace {

// KEYS[1] record, KEYS[2] id set; ARGV version, sealed, notification channel, id.
// Refuses to replace a newer version; announces the change to the other replicas.
constexpr const char* kCasScript = R"(
local v = redis.call('HGET', KEYS[1], 'version')
if v and tonumber(v) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'sealed', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1)";
constexpr const char* kRenewScript = R"(
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0)";
// KEYS[1] lock; ARGV owner, notification channel, id. Waiters wake on the release too.
constexpr const char* kReleaseScript = R"(
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0)";

}  // namespace

// On `{prefix}updates`, beside the ids of changed records: "rate_limited <unix ms> <id>" for
// a vendor's cool-down (ids never hold a space).
constexpr std::string_view kCooldownMessage = "rate_limited ";

struct RedisStore::Notifications {
  struct Waiter {
    std::string id;
    std::shared_ptr<boost::asio::steady_timer> timer;
  };
  std::mutex mutex;
  std::uint64_t all = 0;                        // bumped whenever messages may have been missed
  std::map<std::string, std::uint64_t> per_id;  // bumped by each message about a record
  std::list<Waiter> waiters;
  std::function<void(const std::string&, std::int64_t)> on_cooldown;

  std::uint64_t generation_locked(const std::string& id) const {
    auto it = per_id.find(id);
    return all + (it == per_id.end() ? 0 : it->second);
  }
  std::uint64_t generation(const std::string& id) {
    std::lock_guard lock(mutex);
    return generation_locked(id);
  }

  // On the Redis client's thread: a cool-down another replica (or this one) published.
  void cooldown(std::string_view message) {
    message.remove_prefix(kCooldownMessage.size());
    auto space = message.find(' ');
    if (space == std::string_view::npos) return;
    std::int64_t until = 0;
    auto digits = message.substr(0, space);
    if (std::from_chars(digits.data(), digits.data() + digits.size(), until).ec != std::errc{})
      return;
    std::function<void(const std::string&, std::int64_t)> handler;
    {
      std::lock_guard lock(mutex);
      handler = on_cooldown;
    }
    if (handler) handler(std::string(message.substr(space + 1)), until);
  }

  // On the Redis client's thread: wake whoever waits on `id` (everyone for "").
  void notify(const std::string& id) {
    std::lock_guard lock(mutex);
    if (id.empty())
      ++all;
    else
      ++per_id[id];
    for (auto& w : waiters)
      if (id.empty() || w.id == id)
        boost::asio::post(w.timer->get_executor(), [t = w.timer] { t->cancel(); });
  }
};

RedisStore::RedisStore(const StoreConfig& config, Millis timeout)
    : prefix_(config.redis.prefix),
      key_(decode_key(config.key, "store.key")),
      notifications_(std::make_shared<Notifications>()) {
  for (std::size_t i = 0; i < config.previous_keys.size(); ++i)
    previous_keys_.push_back(
        decode_key(config.previous_keys[i], "store.previous_keys[" + std::to_string(i) + "]"));
  try {
    redis_ = std::make_unique<RedisClient>(config.redis, timeout);
  } catch (const std::invalid_argument& e) {
    throw StoreError(e.what());
  }
  redis_->subscribe(prefix_ + "updates", [n = notifications_](const std::string& message) {
    if (message.starts_with(kCooldownMessage))
      n->cooldown(message);
    else
      n->notify(message);
  });
}

RedisStore::~RedisStore() = default;

boost::asio::awaitable<void> TokenStore::publish_cooldown(std::string, std::int64_t) {
  co_return;
}

boost::asio::awaitable<void> RedisStore::publish_cooldown(std::string id, std::int64_t until_ms) {
  // Best effort: a replica that misses it learns the cool-down from the vendor's next 429.
  RedisClient::Command cmd{"PUBLISH", prefix_ + "updates",
                           std::string(kCooldownMessage) + std::to_string(until_ms) + " " + id};
  co_await redis_->exec(std::move(cmd));
}

void RedisStore::on_cooldown(std::function<void(const std::string&, std::int64_t)> handler) {
  std::lock_guard lock(notifications_->mutex);
  notifications_->on_cooldown = std::move(handler);
}

bool RedisStore::reachable() const {
  return redis_->reachable();
}

std::optional<TokenRecord> RedisStore::open_record(const std::string& id,
                                                   const std::string& sealed_b64) const {
  auto sealed = crypto::unbase64(sealed_b64);
  if (!sealed) return std::nullopt;
  auto plain = crypto::open(key_, *sealed, id);
  for (std::size_t i = 0; !plain && i < previous_keys_.size(); ++i)
    plain = crypto::open(previous_keys_[i], *sealed, id);
  if (!plain) return std::nullopt;
  auto j = nlohmann::json::parse(*plain, nullptr, false);
  if (!j.is_object() || j.value("id", "") != id) return std::nullopt;
  return from_json(j);
}

std::map<std::string, TokenRecord> RedisStore::load() {
  std::map<std::string, TokenRecord> out;
  auto ids = redis_->exec_blocking({"SMEMBERS", prefix_ + "ids"});
  if (!ids.ok())
    throw StoreError("cannot read the redis token store: " +
                     (ids.error.empty() ? ids.reply.str : ids.error));
  // Pipelined reads: one round trip per batch instead of one per record.
  constexpr std::size_t kBatch = 256;
  const auto& all = ids.reply.elements;
  for (std::size_t first = 0; first < all.size(); first += kBatch) {
    std::vector<RedisClient::Command> batch;
    for (std::size_t i = first; i < std::min(all.size(), first + kBatch); ++i)
      batch.push_back({"HGET", prefix_ + "record:" + all[i].str, "sealed"});
    auto replies = redis_->pipeline_blocking(std::move(batch));
    for (std::size_t i = 0; i < replies.size(); ++i) {
      const auto& r = replies[i];
      const auto& id = all[first + i].str;
      if (!r.ok()) throw StoreError("cannot read the redis token store: " + r.error);
      if (r.reply.type != RedisReply::Type::string) continue;
      auto rec = open_record(id, r.reply.str);
      if (!rec)
        throw StoreError(
            "cannot decrypt the redis record of " + id +
            " with store.key or store.previous_keys (wrong key?); it was left untouched");
      out[id] = *rec;
    }
  }
  return out;
}

bool RedisStore::save(const TokenRecord& record) {
  auto sealed = crypto::base64(crypto::seal(key_, to_json(record).dump(), record.id));
  auto r = redis_->exec_blocking({"EVAL", kCasScript, "2", prefix_ + "record:" + record.id,
                                  prefix_ + "ids", std::to_string(record.version), sealed,
                                  prefix_ + "updates", record.id});
  return r.ok();
}

bool RedisStore::remove(const std::string& id) {
  auto rs = redis_->pipeline_blocking({{"DEL", prefix_ + "record:" + id},
                                       {"SREM", prefix_ + "ids", id},
                                       {"PUBLISH", prefix_ + "updates", id}});
  return rs.front().ok();
}

bool RedisStore::subscribed() const {
  return redis_->subscribed();
}

std::uint64_t RedisStore::update_generation(const std::string& id) {
  return notifications_->generation(id);
}

boost::asio::awaitable<void> RedisStore::wait_update(std::string id, std::uint64_t seen,
                                                     Millis poll) {
  auto timer =
      std::make_shared<boost::asio::steady_timer>(co_await boost::asio::this_coro::executor, poll);
  std::list<Notifications::Waiter>::iterator it;
  {
    std::lock_guard lock(notifications_->mutex);
    if (notifications_->generation_locked(id) != seen) co_return;  // changed already
    it = notifications_->waiters.insert(notifications_->waiters.end(), {id, timer});
  }
  co_await timer->async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
  std::lock_guard lock(notifications_->mutex);
  notifications_->waiters.erase(it);
}

boost::asio::awaitable<RefreshLock::Outcome> RedisStore::acquire(std::string id, std::string owner,
                                                                 Millis lease) {
  std::vector<std::string> cmd{"SET", prefix_ + "lock:" + id,       owner, "NX",
                               "PX",  std::to_string(lease.count())};
  auto r = co_await redis_->exec(std::move(cmd));
  if (r.ec || r.reply.type == RedisReply::Type::error) co_return Outcome::unavailable;
  co_return r.reply.type == RedisReply::Type::status ? Outcome::acquired : Outcome::held_by_other;
}

boost::asio::awaitable<bool> RedisStore::renew(std::string id, std::string owner, Millis lease) {
  std::vector<std::string> cmd{
      "EVAL", kRenewScript, "1", prefix_ + "lock:" + id, owner, std::to_string(lease.count())};
  auto r = co_await redis_->exec(std::move(cmd));
  co_return r.ok() && r.reply.integer == 1;
}

boost::asio::awaitable<void> RedisStore::release(std::string id, std::string owner) {
  std::vector<std::string> cmd{"EVAL", kReleaseScript,      "1", prefix_ + "lock:" + id,
                               owner,  prefix_ + "updates", id};
  co_await redis_->exec(std::move(cmd));
}

boost::asio::awaitable<std::optional<TokenRecord>> RedisStore::read(std::string id,
                                                                    bool* reachable) {
  std::vector<std::string> cmd{"HGET", prefix_ + "record:" + id, "sealed"};
  auto r = co_await redis_->exec(std::move(cmd));
  if (reachable) *reachable = !r.ec;
  if (!r.ok() || r.reply.type != RedisReply::Type::string) co_return std::nullopt;
  co_return open_record(id, r.reply.str);
}

}  // namespace gw
