// The redis token store and cluster lock (token_store.hpp): records as hashes written with
// a compare-and-set on the version, lease locks with owner-checked scripts, and change
// notifications (record saves, lock releases, vendor cool-downs) on `{prefix}updates`.
#include <charconv>
#include <list>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include "gateway/auth/crypto.hpp"
#include "gateway/auth/redis_client.hpp"
#include "gateway/auth/store_codec.hpp"
#include "gateway/auth/token_store.hpp"
#include "gateway/observability/log.hpp"

namespace gw {

using store_codec::decode_key;
using store_codec::from_json;
using store_codec::to_json;

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
    replica_wait_ = std::min(Millis(1000), timeout / 2);
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

boost::asio::awaitable<bool> RedisStore::claim_event(std::string id) {
  RedisClient::Command cmd{"SET", prefix_ + "event:" + id, "1", "NX", "PX", "3600000"};
  auto r = co_await redis_->exec(std::move(cmd));
  if (!r.ok()) co_return true;
  co_return r.reply.type == RedisReply::Type::status;
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

// A save is done once a replica has it too, where the primary has replicas (SPEC 6.8): a
// failover must not roll a rotated refresh token back. Not done, it stays pending and is
// saved again (the same version: the compare-and-set lets it through) and waited for again.
// A demoted primary refuses the write itself (READONLY).
bool RedisStore::save(const TokenRecord& record) {
  auto sealed = crypto::base64(crypto::seal(key_, to_json(record).dump(), record.id));
  auto rs = redis_->pipeline_blocking(
      {{"EVAL", kCasScript, "2", prefix_ + "record:" + record.id, prefix_ + "ids",
        std::to_string(record.version), sealed, prefix_ + "updates", record.id},
       {"ROLE"}});
  if (!rs[0].ok()) return false;
  if (saved_without_replicas(rs[1].reply)) return true;
  auto w = redis_->exec_blocking({"WAIT", "1", std::to_string(replica_wait_.count())});
  return w.ok() && w.reply.type == RedisReply::Type::integer && w.reply.integer >= 1;
}

bool RedisStore::saved_without_replicas(const RedisReply& role) {
  if (role.type == RedisReply::Type::error) {
    if (!role_refused_.exchange(true))
      log::event(log::Level::warn,
                 "Redis refuses ROLE to the gateway's user: saves cannot wait for a replica, and "
                 "a failover could roll a rotated refresh token back (grant the user +role)",
                 {{"error", role.str}});
    return true;
  }
  // ["master", offset, [[ip, port, offset], ...]]
  const auto& e = role.elements;
  return role.type != RedisReply::Type::array || e.size() < 3 || e[0].str != "master" ||
         e[2].elements.empty();
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

// After an outage, how long no replica takes a lock for a refresh: those that refreshed while
// Redis was gone save their pending records first (theirs retry every 250 ms at most, and the
// reconnect waits a second at most).
constexpr Millis kSettleAfterOutage{2000};

boost::asio::awaitable<RefreshLock::Outcome> RedisStore::acquire(std::string id, std::string owner,
                                                                 Millis lease) {
  if (redis_->recovered_within(kSettleAfterOutage)) co_return Outcome::settling;
  std::vector<std::string> cmd{"SET", prefix_ + "lock:" + id,       owner, "NX",
                               "PX",  std::to_string(lease.count())};
  auto r = co_await redis_->exec(std::move(cmd));
  if (r.ec || r.reply.type == RedisReply::Type::error) co_return Outcome::unavailable;
  const bool acquired = r.reply.type == RedisReply::Type::status;
  // This very command may have been the first answer after an outage: then the lock goes
  // back, and the others' pending records go first.
  if (redis_->recovered_within(kSettleAfterOutage)) {
    if (acquired) co_await release(id, owner);
    co_return Outcome::settling;
  }
  co_return acquired ? Outcome::acquired : Outcome::held_by_other;
}

boost::asio::awaitable<bool> RedisStore::renew(std::string id, std::string owner, Millis lease) {
  std::vector<std::string> cmd{
      "EVAL", kRenewScript, "1", prefix_ + "lock:" + id, owner, std::to_string(lease.count())};
  auto r = co_await redis_->exec(std::move(cmd));
  co_return r.ok() && r.reply.integer == 1;
}

boost::asio::awaitable<bool> RedisStore::release(std::string id, std::string owner) {
  std::vector<std::string> cmd{"EVAL", kReleaseScript,      "1", prefix_ + "lock:" + id,
                               owner,  prefix_ + "updates", id};
  auto r = co_await redis_->exec(std::move(cmd));
  co_return r.ok();
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
