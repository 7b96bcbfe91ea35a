#include "gateway/proxy/upstream_pool.hpp"

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "gateway/observability/log.hpp"
#include "gateway/observability/metrics.hpp"
#include "gateway/proxy/tls_sessions.hpp"

namespace gw {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;
constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

const char* failure_code(UpstreamFailure f) {
  switch (f) {
    case UpstreamFailure::unreachable:
      return "upstream_unreachable";
    case UpstreamFailure::tls:
      return "upstream_tls_error";
    case UpstreamFailure::timeout:
      return "upstream_timeout";
    case UpstreamFailure::protocol:
      return "upstream_protocol_error";
    case UpstreamFailure::busy:
      return "upstream_busy";
    case UpstreamFailure::none:
      break;
  }
  return "";
}

std::shared_ptr<asio::ssl::context> make_client_tls(const UpstreamConfig& config) {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  // OpenSSL's read and write buffers (about 17 KiB each) go back to the allocator between
  // records instead of staying with each connection: thousands of pooled connections then
  // hold none, and the few in use at a moment share the same warm memory.
  SSL_CTX_set_mode(ctx->native_handle(), SSL_MODE_RELEASE_BUFFERS);
  ctx->set_default_verify_paths();
  if (!config.ca_file.empty()) ctx->load_verify_file(config.ca_file.string());
  ctx->set_verify_mode(asio::ssl::verify_peer);
  // OpenSSL caches a certificate's decoded extensions (key identifiers, purposes) in the
  // certificate on first use; the trust store's certificates are shared by every event
  // loop's handshakes, and two first uses at once race (ThreadSanitizer catches it in
  // OpenSSL 3.0). Fill those caches now, while the context is not shared yet.
  X509_STORE* store = SSL_CTX_get_cert_store(ctx->native_handle());
  STACK_OF(X509_OBJECT)* objects = X509_STORE_get0_objects(store);
  for (int i = 0; i < sk_X509_OBJECT_num(objects); ++i)
    if (X509* cert = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objects, i)))
      X509_check_purpose(cert, -1, 0);
  // Sessions are resumed per vendor host from a cache of the context's own (tls_sessions):
  // OpenSSL's internal client cache stays off, as it only grows (with TLS 1.3 handing out two
  // tickets per connection, the soak saw RSS climb ~1.7 MiB a minute until its 20,480 limit).
  tls_sessions::attach(ctx->native_handle());
  return ctx;
}

UpstreamPool::UpstreamPool(asio::io_context& ioc, UpstreamCounters& counters, std::size_t share)
    : ioc_(ioc), counters_(counters), share_(share ? share : 1), sweep_timer_(ioc) {
  schedule_sweep();
}

void UpstreamPool::schedule_sweep() {
  sweep_timer_.expires_after(std::chrono::seconds(5));
  // The timer is a member: its destruction cancels the wait before `this` is gone.
  sweep_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    sweep();
    schedule_sweep();
  });
}

UpstreamPool::~UpstreamPool() {
  clear();
}

void UpstreamPool::clear() {
  for (auto& [key, list] : idle_) counters_.idle -= static_cast<std::int64_t>(list.size());
  idle_.clear();
}

namespace {

// True when the peer has not closed an idle connection (nothing readable, no EOF, nothing
// OpenSSL read ahead).
bool still_open(UpstreamConnection& c) {
  if (c.stream.has_pending()) return false;
  auto& sock = c.stream.socket();
  char byte;
  ssize_t n = ::recv(sock.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

}  // namespace

void UpstreamPool::sweep() {
  auto now = std::chrono::steady_clock::now();
  for (auto it = idle_.begin(); it != idle_.end();) {
    auto& list = it->second;
    auto before = list.size();
    std::erase_if(list, [&](const auto& c) { return now >= c->idle_until || !still_open(*c); });
    counters_.idle -= static_cast<std::int64_t>(before - list.size());
    it = list.empty() ? idle_.erase(it) : std::next(it);
  }
}

asio::awaitable<UpstreamPool::Acquired> UpstreamPool::acquire(
    const UpstreamTarget& target, std::shared_ptr<asio::ssl::context> tls,
    const UpstreamConfig& config, bool fresh) {
  auto key = target.key();
  // This loop's share of max_per_host (rounded up, at least one).
  std::size_t cap = (config.max_per_host + share_ - 1) / share_;
  if (!take_slot(key, cap)) {
    auto waiter = std::make_shared<Waiter>();
    waiter->timer = std::make_shared<asio::steady_timer>(ioc_, config.connect_timeout);
    waiting_[key].push_back(waiter);
    co_await waiter->timer->async_wait(nothrow);
    if (!waiter->woken) {
      auto& queue = waiting_[key];
      std::erase(queue, waiter);
      if (queue.empty()) waiting_.erase(key);
      co_return Acquired{nullptr, UpstreamFailure::busy,
                         "all " + std::to_string(cap) + " connections to " + key + " are in use"};
    }
    // give_slot handed its slot to this waiter.
  }
  if (!fresh) {
    auto it = idle_.find(key);
    if (it != idle_.end()) {
      auto& list = it->second;
      auto now = std::chrono::steady_clock::now();
      while (!list.empty()) {
        auto c = std::move(list.back());
        list.pop_back();
        --counters_.idle;
        // A reload that changed the trust store retires connections verified with the old.
        bool same_tls = SSL_get_SSL_CTX(c->stream.native_handle()) == tls->native_handle();
        // Always probed: bytes that arrived while it was idle (a vendor writing past its
        // answer) would otherwise be read as this request's answer, another caller's bytes.
        if (same_tls && now < c->idle_until && still_open(*c)) {
          c->reused = true;
          ++counters_.busy;
          co_return Acquired{std::move(c), UpstreamFailure::none, {}};
        }
      }
    }
  }

  auto c = std::make_unique<UpstreamConnection>(ioc_, *tls);
  c->key = key;
  tcp::resolver resolver(ioc_);
  auto [rec, endpoints] = co_await resolver.async_resolve(target.host, target.port, nothrow);
  if (rec) {
    give_slot(key);
    co_return Acquired{nullptr, UpstreamFailure::unreachable, "resolve: " + rec.message()};
  }
  c->stream.expires_after(config.connect_timeout);
  auto cec = co_await c->stream.connect(endpoints);
  if (cec) {
    give_slot(key);
    auto f = cec == beast::error::timeout ? UpstreamFailure::timeout : UpstreamFailure::unreachable;
    co_return Acquired{nullptr, f, "connect: " + cec.message()};
  }
  boost::system::error_code ignored;
  c->stream.socket().set_option(tcp::no_delay(true), ignored);
  tls_sessions::prepare(c->stream.native_handle(), key);
  auto hec = co_await c->stream.handshake(target.host, target.ip_literal);
  if (hec) {
    tls_sessions::forget(c->stream.native_handle());
    give_slot(key);
    auto f = hec == beast::error::timeout ? UpstreamFailure::timeout : UpstreamFailure::tls;
    co_return Acquired{nullptr, f, "tls handshake: " + hec.message()};
  }
  metrics::upstream_handshake(SSL_session_reused(c->stream.native_handle()) == 1);
  ++counters_.opened;
  ++counters_.busy;
  co_return Acquired{std::move(c), UpstreamFailure::none, {}};
}

bool UpstreamPool::take_slot(const std::string& key, std::size_t cap) {
  auto& n = busy_[key];
  if (n >= cap) return false;
  ++n;
  return true;
}

void UpstreamPool::give_slot(const std::string& key) {
  auto it = waiting_.find(key);
  if (it != waiting_.end()) {
    // The slot passes to the longest waiter as it is: the count stays.
    auto waiter = it->second.front();
    it->second.pop_front();
    if (it->second.empty()) waiting_.erase(it);
    waiter->woken = true;
    waiter->timer->cancel();
    return;
  }
  // The entry stays at zero (one per host ever used): erasing it would allocate its node and
  // key again on the next request.
  if (auto b = busy_.find(key); b != busy_.end() && b->second > 0) --b->second;
}

void UpstreamPool::release(std::unique_ptr<UpstreamConnection> c, const UpstreamConfig& config) {
  --counters_.busy;
  give_slot(c->key);
  auto& list = idle_[c->key];
  // 0 (the default): as many as were busy at once, which max_per_host bounds; a steady load
  // at any concurrency then reuses what it opened instead of closing and reopening.
  if (config.max_idle_per_host && list.size() >= config.max_idle_per_host) return;  // closes it
  c->idle_since = std::chrono::steady_clock::now();
  c->idle_until = c->idle_since + config.idle_timeout;
  c->stream.expires_never();
  list.push_back(std::move(c));
  ++counters_.idle;
}

void UpstreamPool::discard(std::unique_ptr<UpstreamConnection> c) {
  if (!c) return;
  --counters_.busy;
  give_slot(c->key);
}

}  // namespace gw
