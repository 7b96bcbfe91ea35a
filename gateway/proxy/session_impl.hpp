// One downstream connection: read a request head, route it, get the connection's
// credential, inject it, stream the request to the vendor, replay once if the vendor
// rejects the token, stream the answer back, log. The story of STYLE.md, in order.
//
// A template over the caller's stream (plain TCP or TLS), included only by
// session_plain.cpp and session_tls.cpp: one instantiation each, compiled in parallel.
// This file declares the class and tells the story (run, handle, forward); the steps are
// defined by concern in session_caller.hpp (the caller's address and request head),
// session_upstream.hpp (the vendor's side of one attempt), session_relay.hpp (the answer
// back to the caller) and session_errors.hpp (the gateway's own answers); the decisions are
// plain functions (router, framing, upstream_head, retry_policy, exchange). Members are
// defined out of class `inline`, as they were when defined in it: the same inlining.
#pragma once
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <nlohmann/json.hpp>

#include <array>

#include "gateway/observability/log.hpp"
#include "gateway/observability/metrics.hpp"
#include "gateway/proxy/caller_socket.hpp"
#include "gateway/proxy/errors.hpp"
#include "gateway/proxy/exchange.hpp"
#include "gateway/proxy/framing.hpp"
#include "gateway/proxy/indexed_parser.hpp"
#include "gateway/proxy/proxy.hpp"
#include "gateway/proxy/rate_limit.hpp"
#include "gateway/proxy/request_rules.hpp"
#include "gateway/proxy/response_rules.hpp"
#include "gateway/proxy/retry_policy.hpp"
#include "gateway/proxy/router.hpp"
#include "gateway/proxy/upstream_head.hpp"

namespace gw {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kRelayBufferBytes = 32 * 1024;
// Relay buffers a loop keeps for the next requests (more in use at once are freed after).
constexpr std::size_t kSpareBuffers = 256;

namespace {

using RequestParser = CallerParser;
using ResponseParser = RelayParser;

template <class Stream>
class Session {
 public:
  Session(Stream& stream, Worker& worker) : stream_(stream), worker_(worker) {}

  // Serves the connection's requests, one after another, until one ends it.
  asio::awaitable<void> run();

 private:
  struct Body {
    bool present = false;
    bool chunked = false;
    std::optional<std::uint64_t> length;
    std::string kept;  // the body, while it fits in replay_body_bytes
    bool complete_copy = true;
    beast::error_code caller_error;  // reading the caller's body failed (not the vendor)
  };

  struct Trip {
    std::unique_ptr<UpstreamConnection> up;  // set when the response head arrived
    UpstreamFailure failure = UpstreamFailure::none;
    std::string detail;
    beast::error_code caller_error;  // the caller's body, not the vendor, failed
    bool reused = false;             // the connection came from the pool
    bool nothing_received = false;   // the failure left no byte of an answer
  };

  // The story, in this file.
  asio::awaitable<bool> handle(RequestParser& parser);
  Routed route(const RequestParser& req, Exchange& ex);
  asio::awaitable<bool> forward(RequestParser& parser, Exchange& ex, const Integration& integ,
                                std::shared_ptr<Connection> conn, const SplitTarget& split,
                                std::shared_ptr<const Credential> cred, bool keep_alive);
  void write_access_log(const Exchange& ex);
  // The vendor's cool-down (SPEC 5.1, rate_limit.hpp), in session_cooldown.hpp: the seconds
  // left that the gateway answers for itself (0: send the request), and the cool-down an
  // answer starts.
  std::int64_t cooldown_left(const Integration& integ, const Connection& conn);
  void note_cooldown(const Integration& integ, Connection& conn, const ResponseParser& rp,
                     const Exchange& ex);

  // The caller's connection, in this file; its address and request head in
  // session_caller.hpp.
  CallerSocket& lowest();
  void close();
  bool peer_ok();
  asio::awaitable<std::pair<beast::error_code, bool>> read_head(RequestParser& parser,
                                                                Millis timeout);
  beast::error_code parse_buffered_head(RequestParser& parser);

  // One attempt at the vendor, in session_upstream.hpp.
  asio::awaitable<Trip> round_trip(RequestParser& parser, Body& body, Exchange& ex,
                                   std::optional<ResponseParser>& rp, const UpstreamTarget& target,
                                   bool streaming, bool fresh);
  asio::awaitable<beast::error_code> send_streaming(UpstreamConnection& up, RequestParser& parser,
                                                    Body& body, Exchange& ex);
  asio::awaitable<std::pair<beast::error_code, std::size_t>> read_body_piece(RequestParser& parser,
                                                                             Body& body,
                                                                             Exchange& ex,
                                                                             char* buf);
  asio::awaitable<beast::error_code> read_whole_body(RequestParser& parser, Body& body,
                                                     Exchange& ex);
  asio::awaitable<beast::error_code> send_kept(UpstreamConnection& up, Body& body);
  template <std::size_t N>
  asio::const_buffer contiguous(const std::array<asio::const_buffer, N>& pieces);
  asio::awaitable<beast::error_code> read_upstream(UpstreamConnection& up, ResponseParser& rp);
  static UpstreamFailure classify(beast::error_code ec);

  // The answer back to the caller, in session_relay.hpp.
  asio::awaitable<bool> relay_response(ResponseParser& rp, std::unique_ptr<UpstreamConnection> up,
                                       Exchange& ex, const Credential& cred, bool keep_alive,
                                       http::verb method);
  char* relay_buffer();

  // The gateway's own answers, in session_errors.hpp.
  asio::awaitable<void> reject_unreadable(beast::error_code ec, RequestParser& parser);
  // `retry_after_s` > 0 adds a Retry-After header.
  asio::awaitable<void> send_error(Exchange& ex, http::status status, std::string_view code,
                                   std::string message, bool keep_alive,
                                   std::int64_t retry_after_s = 0);
  asio::awaitable<bool> upstream_failed(Exchange& ex, UpstreamFailure f, const std::string& detail,
                                        bool keep_alive);
  asio::awaitable<bool> caller_body_failed(Exchange& ex, beast::error_code ec);

  Stream& stream_;
  Worker& worker_;
  std::unique_ptr<char[]> relay_buffer_;
  std::string head_buffer_;  // the caller's response head, reused by every request
  std::string up_head_;      // the upstream request head, likewise
  std::size_t up_head_fields_end_ = 0;
  std::string up_out_;      // an upstream write's pieces, made contiguous
  std::string relay_text_;  // the vendor's answer head (RelayParser), likewise
  std::vector<IndexedField> relay_fields_;
  std::string req_text_;  // the caller's request head (CallerParser), likewise
  std::vector<IndexedField> req_fields_;
  beast::flat_buffer buffer_;
  std::shared_ptr<const Runtime> runtime_;
};

template <class Stream>
inline asio::awaitable<void> Session<Stream>::run() {
  bool first = true;
  while (!worker_.shared.draining.load(std::memory_order_relaxed) || first) {
    runtime_ = worker_.shared.runtime.load();
    const auto& limits = runtime_->config.limits;
    if (!first && buffer_.size() == 0) {
      // Between requests the keep-alive idle timeout applies; once a byte of the next
      // request arrives, the whole head must follow within header_timeout.
      lowest().expires_after(limits.idle_timeout);
      auto [ec, n] = co_await stream_.async_read_some(buffer_.prepare(4096), nothrow);
      lowest().expires_never();
      if (ec) co_return;
      buffer_.commit(n);
    }
    first = false;
    RequestParser parser(req_text_, req_fields_);
    parser.header_limit(static_cast<std::uint32_t>(limits.max_header_bytes));
    parser.body_limit(limits.max_body_bytes);
    auto [ec, timed_out] = co_await read_head(parser, limits.header_timeout);
    if (timed_out) ec = beast::error::timeout;
    if (ec) {
      co_await reject_unreadable(ec, parser);
      co_return;
    }
    ++worker_.shared.inflight;
    bool keep_alive = co_await handle(parser);
    --worker_.shared.inflight;
    // Between requests the relay buffer waits with the loop's spares (a few are kept).
    if (relay_buffer_ && worker_.spare_buffers.size() < kSpareBuffers)
      worker_.spare_buffers.push_back(std::move(relay_buffer_));
    relay_buffer_.reset();
    if (!keep_alive) break;
  }
  close();
}

// Returns whether the downstream connection stays open for another request.
template <class Stream>
inline asio::awaitable<bool> Session<Stream>::handle(RequestParser& parser) {
  Exchange ex;
  auto rid = parser["X-Request-Id"];
  ex.request_id = usable_request_id(rid) ? std::string(rid) : new_request_id();
  ex.method = std::string(parser.method_string());
  ex.path = std::string(parser.target());
  // The traceparent itself is forwarded as any end-to-end header; its trace id is logged.
  if (auto tp = parser["traceparent"]; !tp.empty()) ex.trace_id = traceparent_trace_id(tp);
  // An unread body makes the connection unusable for a next request.
  bool keep_alive = parser.keep_alive() && !worker_.shared.draining.load();
  // HTTP/1.0 has no chunked framing: such a request's end is uncertain, so the connection
  // closes after the answer (RFC 9112 6.1).
  if (parser.version() < 11 && parser.chunked()) keep_alive = false;
  Routed r = route(parser, ex);
  if (r.connection) {
    if (auto left = cooldown_left(*r.integration, *r.connection)) {
      bool keep = keep_alive && parser.is_done();
      co_await send_error(
          ex, http::status::too_many_requests, "rate_limited",
          "the vendor asked this connection to wait; " + std::to_string(left) + " s left", keep,
          left);
      co_return keep;
    }
    auto got = co_await worker_.shared.tokens->acquire(r.connection);
    if (got.credential)
      co_return co_await forward(parser, ex, *r.integration, std::move(r.connection), *r.split,
                                 std::move(got.credential), keep_alive);
    r.status = http::status::service_unavailable;
    r.code = "credential_unavailable";
    r.message = std::move(got.error);
  }
  bool keep = keep_alive && !r.close && parser.is_done();
  co_await send_error(ex, r.status, r.code, std::move(r.message), keep);
  co_return keep;
}

// Reads what routing needs off the parser and the socket, and routes (router.hpp). Not a
// coroutine, so its temporaries stay out of every request's frame.
template <class Stream>
inline Routed Session<Stream>::route(const RequestParser& req, Exchange& ex) {
  auto te = req.count(http::field::transfer_encoding);
  auto cl = req.count(http::field::content_length);
  std::string framing =
      framing_problem(te, te ? req[http::field::transfer_encoding] : std::string_view(), cl,
                      cl == 1 ? req[http::field::content_length] : std::string_view());
  RouteRequest in{.draining = worker_.shared.draining.load(),
                  .peer_allowed = peer_ok(),
                  .method = req.method(),
                  .method_string = req.method_string(),
                  .target = req.target(),
                  .connection = req["X-Gateway-Connection"],
                  .framing_problem = framing};
  return gw::route(in, *runtime_->routes, ex);
}

template <class Stream>
inline asio::awaitable<bool> Session<Stream>::forward(
    RequestParser& parser, Exchange& ex, const Integration& integ, std::shared_ptr<Connection> conn,
    const SplitTarget& split, std::shared_ptr<const Credential> cred, bool keep_alive) {
  const auto& req = parser;
  const auto& cfg = runtime_->config;
  const Policy& policy = *integ.policy;
  Body body;
  body.chunked = parser.chunked();
  if (auto len = parser.content_length()) body.length = *len;
  body.present = body.chunked || (body.length && *body.length > 0);

  if (body.present && beast::iequals(req[http::field::expect], "100-continue")) {
    // We answer the caller's expectation ourselves; the vendor gets the body directly.
    static constexpr std::string_view cont = "HTTP/1.1 100 Continue\r\n\r\n";
    lowest().expires_after(cfg.limits.idle_timeout);
    auto [ec, n] =
        co_await asio::async_write(stream_, asio::buffer(cont.data(), cont.size()), nothrow);
    lowest().expires_never();
    if (ec) co_return false;
  }

  // A body with a length that fits in replay_body_bytes is read before the vendor is asked;
  // a chunked or larger one streams.
  bool prebuffered = false;
  if (body.present && !body.chunked && body.length &&
      *body.length <= cfg.limits.replay_body_bytes) {
    if (auto ec = co_await read_whole_body(parser, body, ex))
      co_return co_await caller_body_failed(ex, ec);
    prebuffered = true;
  }

  RetryPolicy retry(policy.replay, ex.method);
  // Which request a rejection was for, so one the vendor refuses whatever the token stops
  // forcing refreshes (TokenProvider::rejected_again).
  // Hashed only when the vendor rejects the token, not on every request.
  auto what = [&] {
    return std::hash<std::string_view>{}(split.path) ^
           (std::hash<std::string_view>{}(ex.method) << 1);
  };
  for (;;) {
    up_head_fields_end_ = upstream_head(up_head_, req, conn->upstream, split, *cred, ex.request_id);
    auto up_start = SteadyClock::now();
    std::optional<ResponseParser> rp;
    auto trip = co_await round_trip(parser, body, ex, rp, conn->upstream,
                                    /*streaming=*/retry.first_attempt() && !prebuffered,
                                    /*fresh=*/false);
    if (trip.caller_error) co_return co_await caller_body_failed(ex, trip.caller_error);
    if (trip.failure != UpstreamFailure::none &&
        retry.may_retry_stale(trip.reused, trip.nothing_received, parser.is_done(),
                              !body.present || body.complete_copy)) {
      // The vendor closed a pooled connection as we reused it, before answering a byte:
      // an idempotent request goes again, once, on a fresh connection.
      retry.add_stale_retry();
      metrics::upstream_stale_retry(ex.integration);
      trip = co_await round_trip(parser, body, ex, rp, conn->upstream,
                                 /*streaming=*/false, /*fresh=*/true);
    }
    if (trip.failure != UpstreamFailure::none) {
      // A failure while reading the caller's body ends the downstream connection too.
      keep_alive = keep_alive && parser.is_done();
      co_return co_await upstream_failed(ex, trip.failure, trip.detail, keep_alive);
    }
    auto up = std::move(trip.up);
    ex.upstream_ms += ms_since(up_start);
    ex.upstream_status = rp->status();
    metrics::upstream_done(ex.integration, ms_since(up_start) / 1000);
    if (starts_cooldown(ex.upstream_status)) note_cooldown(integ, *conn, *rp, ex);
    bool token_rejected = policy.reauth_on.count(ex.upstream_status) > 0;

    if (retry.first_attempt() && token_rejected) {
      if (retry.may_replay(!body.present || body.complete_copy)) {
        auto renewed = co_await worker_.shared.tokens->rejected(conn, cred, what());
        if (renewed.credential) {
          // Drop the rejected answer with its connection; replay with the new token.
          worker_.pool.discard(std::move(up));
          cred = renewed.credential;
          ex.retried = true;
          retry.add_replay();
          continue;
        }
        metrics::auth_retry(ex.integration, metrics::RetryResult::refresh_failed);
      } else {
        // Not replayable: the caller gets the vendor's answer; the token is renewed anyway.
        metrics::auth_retry(ex.integration, metrics::RetryResult::not_replayable);
        asio::co_spawn(worker_.ioc, worker_.shared.tokens->rejected(conn, cred, what()),
                       asio::detached);
      }
    } else if (retry.replayed()) {
      if (token_rejected) worker_.shared.tokens->rejected_again(*conn, *cred, what());
      metrics::auth_retry(ex.integration, token_rejected ? metrics::RetryResult::rejected_again
                                                         : metrics::RetryResult::replayed);
    }
    // The replay (the last attempt) always gets here.
    co_return co_await relay_response(*rp, std::move(up), ex, *cred, keep_alive, req.method());
  }
}

template <class Stream>
inline void Session<Stream>::write_access_log(const Exchange& ex) {
  finish(ex, runtime_->config.log.access_log);
}

// Every operation on the caller's connection runs under a deadline set just before it and
// cleared just after (CallerSocket's deadline runs whether or not one is under way).
template <class Stream>
inline CallerSocket& Session<Stream>::lowest() {
  return beast::get_lowest_layer(stream_);
}

template <class Stream>
inline void Session<Stream>::close() {
  beast::error_code ignored;
  lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
  lowest().close();
}

}  // namespace

// Serves a plain-TCP caller (session_plain.cpp); serve_downstream is in session_tls.cpp.
asio::awaitable<void> serve_plain_session(tcp::socket socket, Worker& worker);

}  // namespace gw
