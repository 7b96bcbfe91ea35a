#include "gateway/auth/token_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "gateway/auth/crypto.hpp"
#include "gateway/auth/store_codec.hpp"

namespace gw {

namespace store_codec {

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

}  // namespace store_codec

namespace {

using store_codec::decode_key;
using store_codec::from_json;
using store_codec::to_json;

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

boost::asio::awaitable<void> TokenStore::publish_cooldown(std::string, std::int64_t) {
  co_return;
}

boost::asio::awaitable<bool> TokenStore::claim_event(std::string) {
  co_return true;
}

}  // namespace gw
