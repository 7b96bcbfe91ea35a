#include "gateway/notify/notifier.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/parse.hpp>
#include <nlohmann/json.hpp>

#include <thread>

#include "gateway/auth/crypto.hpp"
#include "gateway/observability/log.hpp"
#include "gateway/observability/metrics.hpp"

namespace gw {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

HealthEvent health_event_of(const Connection& c, std::string event, std::string state,
                            std::string previous, std::uint64_t version) {
  HealthEvent e;
  e.event = std::move(event);
  e.connection = c.id;
  e.integration = c.integration;
  e.state = std::move(state);
  e.previous_state = std::move(previous);
  {
    std::lock_guard lock(c.lifecycle->mutex);
    e.reason = c.lifecycle->last_error;
  }
  e.version = version;
  return e;
}

std::string health_event_id(const HealthEvent& e) {
  auto digest = crypto::sha256(e.connection + '\n' + e.event + '\n' + e.previous_state + '\n' +
                               std::to_string(e.version));
  return crypto::hex(digest.substr(0, 16));
}

std::string health_event_body(const HealthEvent& e, const std::string& id, const std::string& at) {
  return nlohmann::json{{"id", id},
                        {"event", e.event},
                        {"connection", e.connection},
                        {"integration", e.integration},
                        {"state", e.state},
                        {"previous_state", e.previous_state},
                        {"reason", e.reason},
                        {"at", at}}
      .dump();
}

namespace {

// One POST; the status, or 0 when it did not get one (unreachable, TLS, timeout).
template <class Stream>
asio::awaitable<unsigned> exchange(Stream& stream, http::request<http::string_body>& req) {
  auto [wec, wn] = co_await http::async_write(stream, req, nothrow);
  if (wec) co_return 0;
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 * 1024);
  auto [rec, rn] = co_await http::async_read(stream, buffer, parser, nothrow);
  if (rec) co_return 0;
  co_return parser.get().result_int();
}

asio::awaitable<unsigned> post(const std::string& url, const std::string& body,
                               const std::string& signature, const std::string& event,
                               std::shared_ptr<asio::ssl::context> tls, Millis timeout) {
  auto u = boost::urls::parse_absolute_uri(url);
  if (!u) co_return 0;
  const bool https = u->scheme() == "https";
  std::string host(u->encoded_host_address());
  if (!host.empty() && host.front() == '[') host = host.substr(1, host.size() - 2);
  std::string port = u->has_port() ? std::string(u->port()) : (https ? "443" : "80");
  std::string target(u->encoded_resource());
  if (target.empty()) target = "/";
  auto executor = co_await asio::this_coro::executor;
  http::request<http::string_body> req{http::verb::post, target, 11};
  req.set(http::field::host, std::string(u->encoded_authority()));
  req.set(http::field::user_agent, "gateway/" GATEWAY_VERSION);
  req.set(http::field::content_type, "application/json");
  req.set("X-Gateway-Signature", signature);
  req.set("X-Gateway-Event", event);
  req.body() = body;
  req.prepare_payload();
  req.keep_alive(false);
  asio::ip::tcp::resolver resolver(executor);
  auto [rerr, endpoints] = co_await resolver.async_resolve(host, port, nothrow);
  if (rerr) co_return 0;
  if (!https) {
    beast::tcp_stream stream(executor);
    stream.expires_after(timeout);
    auto [cec, ep] = co_await stream.async_connect(endpoints, nothrow);
    if (cec) co_return 0;
    co_return co_await exchange(stream, req);
  }
  beast::ssl_stream<beast::tcp_stream> stream(executor, *tls);
  auto& lowest = beast::get_lowest_layer(stream);
  lowest.expires_after(timeout);
  auto [cec, ep] = co_await lowest.async_connect(endpoints, nothrow);
  if (cec) co_return 0;
  if (u->host_type() != boost::urls::host_type::ipv4 &&
      u->host_type() != boost::urls::host_type::ipv6)
    SSL_set_tlsext_host_name(stream.native_handle(), host.c_str());
  stream.set_verify_mode(asio::ssl::verify_peer);
  stream.set_verify_callback(asio::ssl::host_name_verification(host));
  auto [hec] = co_await stream.async_handshake(asio::ssl::stream_base::client, nothrow);
  if (hec) co_return 0;
  co_return co_await exchange(stream, req);
}

}  // namespace

struct Notifier::Impl : std::enable_shared_from_this<Impl> {
  explicit Impl(NotifierParts p) : parts(std::move(p)) {}
  NotifierParts parts;
  asio::io_context ioc{1};
  asio::executor_work_guard<asio::io_context::executor_type> work{ioc.get_executor()};
  std::thread thread;
  std::atomic<bool> stopping{false};

  asio::awaitable<void> deliver(HealthEvent e, NotifyConfig cfg) {
    auto id = health_event_id(e);
    if (parts.claim && !co_await parts.claim(id)) co_return;  // another replica sends it
    auto body = health_event_body(e, id, log::timestamp());
    auto signature = "sha256=" + crypto::hex(crypto::hmac_sha256(cfg.secret, body));
    nlohmann::json fields = {{"event", e.event}, {"connection", e.connection}, {"id", id}};
    const auto give_up = std::chrono::steady_clock::now() + parts.give_up_after;
    Millis backoff = parts.first_retry;
    asio::steady_timer timer(ioc);
    for (int attempt = 1;; ++attempt) {
      auto tls = parts.tls ? parts.tls() : nullptr;
      unsigned status = co_await post(cfg.url, body, signature, e.event, tls, parts.timeout);
      if (status >= 200 && status < 300) {
        metrics::notification(e.event, "delivered");
        fields["attempts"] = attempt;
        log::event(log::Level::info, "health event delivered", fields);
        co_return;
      }
      fields["status"] = status;
      if (stopping || std::chrono::steady_clock::now() + backoff > give_up) {
        metrics::notification(e.event, "dropped");
        fields["attempts"] = attempt;
        log::event(log::Level::error, "health event dropped: the receiver never took it", fields);
        co_return;
      }
      metrics::notification(e.event, "retried");
      if (attempt == 1)
        log::event(log::Level::warn, "health event not delivered; retrying with backoff", fields);
      timer.expires_after(backoff);
      co_await timer.async_wait(nothrow);
      backoff = std::min(parts.last_retry, backoff * 2);
    }
  }
};

Notifier::Notifier(NotifierParts parts) : impl_(std::make_shared<Impl>(std::move(parts))) {
  impl_->thread = std::thread([impl = impl_] { impl->ioc.run(); });
  pthread_setname_np(impl_->thread.native_handle(), "gw-notify");
}

Notifier::~Notifier() {
  stop();
}

void Notifier::send(HealthEvent e) {
  if (impl_->stopping || !impl_->parts.config) return;
  auto cfg = impl_->parts.config();
  if (!cfg.wants(e.event)) return;
  asio::post(impl_->ioc, [impl = impl_, e = std::move(e), cfg = std::move(cfg)]() mutable {
    asio::co_spawn(impl->ioc, impl->deliver(std::move(e), std::move(cfg)), asio::detached);
  });
}

void Notifier::stop() {
  if (!impl_->thread.joinable()) return;
  impl_->stopping = true;
  impl_->ioc.stop();
  impl_->thread.join();
}

}  // namespace gw
