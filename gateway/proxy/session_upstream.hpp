// The vendor's side of one attempt (session_impl.hpp tells the story): a connection from
// the pool, the request streamed from the caller or sent again from the kept copy, and the
// head of the answer.
#pragma once
#include "gateway/proxy/session_impl.hpp"

namespace gw {
namespace {

// One exchange up to the response head: a pooled (or, with `fresh`, a new) connection,
// the request (streamed from the caller, or the kept copy), the head of the answer.
template <class Stream>
inline auto Session<Stream>::round_trip(RequestParser& parser, Body& body, Exchange& ex,
                                        std::optional<ResponseParser>& rp,
                                        const UpstreamTarget& target, bool streaming, bool fresh)
    -> asio::awaitable<Trip> {
  const auto& cfg = runtime_->config;
  Trip trip;
  auto acquired = co_await worker_.pool.acquire(target, runtime_->client_tls, cfg.upstream, fresh);
  if (!acquired.connection) {
    trip.failure = acquired.failure;
    trip.detail = std::move(acquired.detail);
    co_return trip;
  }
  auto up = std::move(acquired.connection);
  trip.reused = up->reused;
  beast::error_code ec =
      streaming ? co_await send_streaming(*up, parser, body, ex) : co_await send_kept(*up, body);
  if (ec) {
    worker_.pool.discard(std::move(up));
    trip.caller_error = body.caller_error;
    trip.failure = classify(ec);
    trip.detail = "send: " + ec.message();
    trip.nothing_received = true;
    co_return trip;
  }
  do {
    rp.emplace(relay_text_, relay_fields_);
    rp->body_limit(boost::none);
    rp->header_limit(64 * 1024);
    if (parser.method() == http::verb::head) rp->skip(true);
    up->stream.expires_after(cfg.upstream.response_timeout);
    beast::error_code rec;
    do rec = co_await read_upstream(*up, *rp);
    while (!rec && !rp->is_header_done());
    if (rec) {
      trip.nothing_received =
          !rp->got_some() && up->buffer.size() == 0 && rec != beast::error::timeout;
      worker_.pool.discard(std::move(up));
      trip.failure = classify(rec);
      trip.detail = "response: " + rec.message();
      co_return trip;
    }
  } while (rp->status() / 100 == 1 && rp->status() != 101);
  if (auto why = answer_head_problem(rp->status(), rp->count(http::field::transfer_encoding),
                                     (*rp)[http::field::transfer_encoding]);
      !why.empty()) {
    worker_.pool.discard(std::move(up));
    trip.failure = UpstreamFailure::protocol;
    trip.detail = std::string("response: ") + std::string(why);
    co_return trip;
  }
  trip.up = std::move(up);
  co_return trip;
}

// First attempt: stream the caller's body to the vendor, keeping a copy for a replay. The
// head leaves with the first piece of the body (or alone when there is none).
template <class Stream>
inline asio::awaitable<beast::error_code> Session<Stream>::send_streaming(UpstreamConnection& up,
                                                                          RequestParser& parser,
                                                                          Body& body,
                                                                          Exchange& ex) {
  const auto& cfg = runtime_->config;
  const std::string& head = set_framing(up_head_, up_head_fields_end_, body.chunked, body.length);
  if (!body.present) {
    up.stream.expires_after(cfg.upstream.response_timeout);
    co_return co_await up.stream.write(asio::buffer(head));
  }
  char* buf = relay_buffer();
  bool head_sent = false;
  for (;;) {
    std::size_t got = 0;
    if (!parser.is_done()) {
      auto [rec, rgot] = co_await read_body_piece(parser, body, ex, buf);
      if (rec) co_return rec;
      got = rgot;
    }
    bool last = parser.is_done();
    // A read may parse only a chunk header: nothing to send yet.
    if (got || last) {
      std::array<asio::const_buffer, 4> out{};
      if (!head_sent) out[0] = asio::buffer(head);
      char size_line[24];
      frame_piece(out, buf, got, body.chunked, last, size_line);
      up.stream.expires_after(cfg.upstream.response_timeout);
      if (auto wec = co_await up.stream.write(contiguous(out))) co_return wec;
      head_sent = true;
    }
    if (last) co_return beast::error_code{};
  }
}

// Reads the next piece of the caller's body into `buf` (up to kRelayBufferBytes), keeping a
// copy while the whole body fits in replay_body_bytes. Returns the error (also recorded in
// body.caller_error) and how many body bytes arrived.
template <class Stream>
inline asio::awaitable<std::pair<beast::error_code, std::size_t>> Session<Stream>::read_body_piece(
    RequestParser& parser, Body& body, Exchange& ex, char* buf) {
  const auto& cfg = runtime_->config;
  parser.body_buffer(buf, kRelayBufferBytes);
  lowest().expires_after(cfg.limits.idle_timeout);
  auto [rec, rn] = co_await http::async_read_some(stream_, buffer_, parser, nothrow);
  lowest().expires_never();
  if (rec == http::error::need_buffer) rec = {};
  if (rec) {
    body.caller_error = rec;
    co_return std::pair{rec, std::size_t{0}};
  }
  std::size_t got = kRelayBufferBytes - parser.body_left();
  ex.bytes_in += got;
  if (body.complete_copy) {
    if (body.kept.size() + got <= cfg.limits.replay_body_bytes) {
      body.kept.append(buf, got);
    } else {
      body.complete_copy = false;
      std::string().swap(body.kept);
    }
  }
  co_return std::pair{beast::error_code{}, got};
}

// Reads a body that fits in replay_body_bytes whole before a vendor connection is taken: a
// caller sending it slowly then holds no vendor connection (1,000 slow callers would
// otherwise hold 1,000, past most vendors' per-account caps).
template <class Stream>
inline asio::awaitable<beast::error_code> Session<Stream>::read_whole_body(RequestParser& parser,
                                                                           Body& body,
                                                                           Exchange& ex) {
  char* buf = relay_buffer();
  while (!parser.is_done()) {
    auto [ec, got] = co_await read_body_piece(parser, body, ex, buf);
    if (ec) co_return ec;
  }
  co_return beast::error_code{};
}

// A replay: the head and the kept body, whole, in one write.
template <class Stream>
inline asio::awaitable<beast::error_code> Session<Stream>::send_kept(UpstreamConnection& up,
                                                                     Body& body) {
  const std::string& head = set_framing(
      up_head_, up_head_fields_end_, false,
      body.present || body.length ? std::optional<std::uint64_t>(body.kept.size()) : std::nullopt);
  std::array<asio::const_buffer, 2> out{asio::buffer(head),
                                        asio::buffer(body.kept.data(), body.kept.size())};
  up.stream.expires_after(runtime_->config.upstream.response_timeout);
  co_return co_await up.stream.write(contiguous(out));
}

// The pieces of an upstream write copied into one buffer, for one SSL_write: OpenSSL then
// fills whole 16 KiB records (a small head and body share one record and one write(2)).
template <class Stream>
template <std::size_t N>
inline asio::const_buffer Session<Stream>::contiguous(
    const std::array<asio::const_buffer, N>& pieces) {
  up_out_.clear();
  for (const auto& b : pieces) up_out_.append(static_cast<const char*>(b.data()), b.size());
  return asio::buffer(up_out_);
}

// Feeds the vendor's bytes to `rp`: the buffered ones first, reading more only when the
// parser needs them (what Beast's read_some does, without its composed-operation layers).
// Returns once the parser made progress: a head, body bytes (need_buffer when its buffer
// is full), the end of the message, or an error.
template <class Stream>
inline asio::awaitable<beast::error_code> Session<Stream>::read_upstream(UpstreamConnection& up,
                                                                         ResponseParser& rp) {
  beast::error_code ec;
  for (;;) {
    if (up.buffer.size() > 0) {
      auto used = rp.put(up.buffer.data(), ec);
      up.buffer.consume(used);
      if (ec != http::error::need_more) co_return ec;
      ec = {};
    }
    auto [rec, n] =
        co_await up.stream.read_some(up.buffer.prepare(beast::read_size(up.buffer, 65536)));
    up.buffer.commit(n);
    if (rec == asio::error::eof) {
      if (!rp.got_some()) co_return http::error::end_of_stream;
      rp.put_eof(ec);  // an answer delimited by the close ends here, or is cut short
      co_return ec;
    }
    if (rec) co_return rec;
  }
}

template <class Stream>
inline UpstreamFailure Session<Stream>::classify(beast::error_code ec) {
  if (ec == beast::error::timeout) return UpstreamFailure::timeout;
  if (ec.category() == asio::error::get_ssl_category()) return UpstreamFailure::protocol;
  if (ec == asio::error::connection_refused) return UpstreamFailure::unreachable;
  return UpstreamFailure::protocol;
}

}  // namespace
}  // namespace gw
