#include "gateway/proxy/tls_sessions.hpp"

#include <ctime>
#include <mutex>
#include <unordered_map>

namespace gw::tls_sessions {

namespace {

// At most this many hosts keep a session; past it the cache starts over (a gateway talks to
// a handful of vendor hosts; the bound only stops learned hosts from growing it forever).
constexpr std::size_t kMaxHosts = 1024;

struct Cache {
  std::mutex mutex;
  std::unordered_map<std::string, SSL_SESSION*> sessions;

  ~Cache() {
    for (auto& [key, s] : sessions) SSL_SESSION_free(s);
  }
  void put(const std::string& key, SSL_SESSION* s) {
    std::lock_guard lock(mutex);
    auto [it, added] = sessions.try_emplace(key, s);
    if (!added) {
      SSL_SESSION_free(it->second);
      it->second = s;
    } else if (sessions.size() > kMaxHosts) {
      for (auto& [k, old] : sessions)
        if (old != s) SSL_SESSION_free(old);
      sessions.clear();
      sessions.emplace(key, s);
    }
  }
  void drop(const std::string& key) {
    std::lock_guard lock(mutex);
    if (auto it = sessions.find(key); it != sessions.end()) {
      SSL_SESSION_free(it->second);
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
    if (SSL_SESSION* copy = SSL_SESSION_dup(session)) cache->put(*key, copy);
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
  if (!live(it->second) || !SSL_SESSION_is_resumable(it->second)) {
    SSL_SESSION_free(it->second);
    cache->sessions.erase(it);
    return;
  }
  if (SSL_SESSION* copy = SSL_SESSION_dup(it->second)) {
    SSL_set_session(ssl, copy);  // takes its own reference
    SSL_SESSION_free(copy);
  }
}

void forget(SSL* ssl) {
  Cache* cache = cache_of(SSL_get_SSL_CTX(ssl));
  if (const std::string* key = key_of(ssl); cache && key) cache->drop(*key);
}

}  // namespace gw::tls_sessions
