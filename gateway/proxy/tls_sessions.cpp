#include "gateway/proxy/tls_sessions.hpp"

#include <ctime>
#include <mutex>
#include <unordered_map>

namespace gw::tls_sessions {

namespace {

// At most this many hosts keep a session; past it the cache starts over (a gateway talks to
// a handful of vendor hosts; the bound only stops learned hosts from growing it forever).
constexpr std::size_t kMaxHosts = 1024;

// A session is offered for at most this long after the full handshake that verified the
// vendor's chain: each resumption hands out a new ticket that inherits the old chain, so
// without a bound a chain would never be verified again (an expired or replaced certificate
// would go unnoticed until a reload).
constexpr std::time_t kReverifyAfter = 3600;

struct Entry {
  SSL_SESSION* session = nullptr;
  std::time_t verified_at = 0;  // the full handshake the session descends from
};

struct Cache {
  std::mutex mutex;
  std::unordered_map<std::string, Entry> sessions;

  ~Cache() {
    for (auto& [key, e] : sessions) SSL_SESSION_free(e.session);
  }
  // `resumed`: the session came from a resumed connection, and keeps its entry's age (none:
  // it is not kept, since its chain's age is unknown).
  void put(const std::string& key, SSL_SESSION* s, bool resumed) {
    std::lock_guard lock(mutex);
    auto it = sessions.find(key);
    if (resumed && it == sessions.end()) {
      SSL_SESSION_free(s);
      return;
    }
    std::time_t verified_at = resumed ? it->second.verified_at : std::time(nullptr);
    if (it != sessions.end()) {
      SSL_SESSION_free(it->second.session);
      it->second = {s, verified_at};
      return;
    }
    if (sessions.size() >= kMaxHosts) {
      for (auto& [k, old] : sessions) SSL_SESSION_free(old.session);
      sessions.clear();
    }
    sessions.emplace(key, Entry{s, verified_at});
  }
  void drop(const std::string& key) {
    std::lock_guard lock(mutex);
    if (auto it = sessions.find(key); it != sessions.end()) {
      SSL_SESSION_free(it->second.session);
      sessions.erase(it);
    }
  }
};

void free_cache(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  delete static_cast<Cache*>(ptr);
}
void free_key(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  delete static_cast<std::string*>(ptr);
}

int ctx_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_cache);
  return index;
}
int ssl_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, free_key);
  return index;
}

Cache* cache_of(SSL_CTX* ctx) {
  return static_cast<Cache*>(SSL_CTX_get_ex_data(ctx, ctx_index()));
}
const std::string* key_of(SSL* ssl) {
  return static_cast<const std::string*>(SSL_get_ex_data(ssl, ssl_index()));
}

// OpenSSL hands over each session the vendor issues (for TLS 1.3, as its tickets arrive after
// the handshake). The cache keeps a copy, and each connection is given a copy of its own:
// OpenSSL marks a connection's session not resumable when the connection is freed without a
// close_notify (as the pool closes them), and a shared object would then spoil the cached one
// (a run of full handshakes until the next ticket).
int on_new_session(SSL* ssl, SSL_SESSION* session) {
  Cache* cache = cache_of(SSL_get_SSL_CTX(ssl));
  const std::string* key = key_of(ssl);
  // Connections that were not prepared (the token endpoint's) are not cached.
  if (cache && key && SSL_SESSION_is_resumable(session))
    if (SSL_SESSION* copy = SSL_SESSION_dup(session))
      cache->put(*key, copy, SSL_session_reused(ssl) == 1);
  return 0;  // the connection keeps its own reference
}

bool live(SSL_SESSION* s) {
  return SSL_SESSION_get_time(s) + SSL_SESSION_get_timeout(s) > std::time(nullptr);
}

}  // namespace

void attach(SSL_CTX* ctx) {
  SSL_CTX_set_ex_data(ctx, ctx_index(), new Cache);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, on_new_session);
}

void prepare(SSL* ssl, const std::string& host_key) {
  SSL_set_ex_data(ssl, ssl_index(), new std::string(host_key));
  Cache* cache = cache_of(SSL_get_SSL_CTX(ssl));
  if (!cache) return;
  std::lock_guard lock(cache->mutex);
  auto it = cache->sessions.find(host_key);
  if (it == cache->sessions.end()) return;
  SSL_SESSION* saved = it->second.session;
  if (!live(saved) || !SSL_SESSION_is_resumable(saved) ||
      std::time(nullptr) - it->second.verified_at >= kReverifyAfter) {
    SSL_SESSION_free(saved);
    cache->sessions.erase(it);
    return;
  }
  if (SSL_SESSION* copy = SSL_SESSION_dup(saved)) {
    SSL_set_session(ssl, copy);  // takes its own reference
    SSL_SESSION_free(copy);
  }
}

void forget(SSL* ssl) {
  Cache* cache = cache_of(SSL_get_SSL_CTX(ssl));
  if (const std::string* key = key_of(ssl); cache && key) cache->drop(*key);
}

}  // namespace gw::tls_sessions
