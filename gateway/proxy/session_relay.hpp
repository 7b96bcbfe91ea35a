// The vendor's answer back to the caller (session_impl.hpp tells the story): its head
// rewritten, its body relayed as it arrives, the vendor connection pooled or dropped.
#pragma once
#include "gateway/proxy/session_impl.hpp"

namespace gw {
namespace {

template <class Stream>
inline asio::awaitable<bool> Session<Stream>::relay_response(ResponseParser& rp,
                                                             std::unique_ptr<UpstreamConnection> up,
                                                             Exchange& ex, const Credential& cred,
                                                             bool keep_alive, http::verb method) {
  const auto& cfg = runtime_->config;
  unsigned status = rp.status();
  bool bodiless = method == http::verb::head || status == 204 || status == 304;
  bool chunked = !bodiless && (rp.chunked() || !rp.content_length());
  // A HEAD answer's length is the GET's, worth passing on; a 204 or 304 has none.
  std::optional<std::uint64_t> length;
  if (!chunked && rp.content_length() && (status != 204 && status != 304))
    length = *rp.content_length();
  ex.status = status;
  write_response_head(head_buffer_, rp, ex.request_id, cred.secrets,
                      ResponseFraming{chunked, length, keep_alive});
  const std::string& head = head_buffer_;

  bool head_sent = false;
  if (!rp.is_done() && up->buffer.size() == 0) {
    // No body byte has arrived yet: the head goes now (a slow or streamed body must not
    // hold it back). Otherwise head and first chunk leave in one write below.
    lowest().expires_after(cfg.limits.idle_timeout);
    auto [hec, hn] = co_await asio::async_write(stream_, asio::buffer(head), nothrow);
    lowest().expires_never();
    ex.bytes_out += hn;
    if (hec) {
      worker_.pool.discard(std::move(up));
      write_access_log(ex);
      co_return false;
    }
    head_sent = true;
  }
  char* buf = relay_buffer();
  for (;;) {
    std::size_t got = 0;
    if (!rp.is_done()) {
      rp.body_buffer(buf, kRelayBufferBytes);
      up->stream.expires_after(cfg.upstream.response_timeout);
      // Whatever arrived goes on at once (a streamed answer is not held back until the
      // relay buffer fills).
      auto rec = co_await read_upstream(*up, rp);
      if (rec == http::error::need_buffer) rec = {};
      if (rec) {
        worker_.pool.discard(std::move(up));
        if (!head_sent) {
          // Nothing reached the caller yet: a clear 502/504 instead of a cut answer.
          co_return co_await upstream_failed(ex, classify(rec), "response body: " + rec.message(),
                                             keep_alive);
        }
        // The answer is half sent: all we can do is end the caller's connection.
        log::event(log::Level::warn, "upstream body failed",
                   {{"request_id", ex.request_id}, {"detail", rec.message()}});
        write_access_log(ex);
        co_return false;
      }
      got = kRelayBufferBytes - rp.body_left();
    }
    bool last = rp.is_done();
    // Head (once), then the bytes read, framed as a chunk when the answer is chunked.
    std::array<asio::const_buffer, 4> out{};
    if (!head_sent) out[0] = asio::buffer(head);
    char size_line[24];
    frame_piece(out, buf, got, chunked, last, size_line);
    if (asio::buffer_size(out) > 0) {
      lowest().expires_after(cfg.limits.idle_timeout);
      auto [wec, wn] = co_await asio::async_write(stream_, out, nothrow);
      lowest().expires_never();
      ex.bytes_out += wn;
      if (wec) {
        worker_.pool.discard(std::move(up));
        write_access_log(ex);
        co_return false;
      }
      head_sent = true;
    }
    if (last) break;
  }

  // Bytes past the answer's end, already here or announced by a bodiless answer, would be
  // the next caller's answer: such a connection is closed, never pooled.
  AnswerEnd end{.head_request = method == http::verb::head,
                .status = status,
                .content_length = rp[http::field::content_length],
                .transfer_encoding = rp[http::field::transfer_encoding],
                .keep_alive = rp.keep_alive(),
                .bytes_left = up->buffer.size() > 0 || up->stream.has_pending()};
  if (reusable_after(end))
    worker_.pool.release(std::move(up), cfg.upstream);
  else
    worker_.pool.discard(std::move(up));
  write_access_log(ex);
  co_return keep_alive;
}

// One relay buffer per caller connection, reused by every request on it (bodies are
// relayed one direction at a time), allocated on first use and never zeroed.
template <class Stream>
inline char* Session<Stream>::relay_buffer() {
  if (!relay_buffer_) {
    auto& spare = worker_.spare_buffers;
    if (spare.empty()) {
      relay_buffer_ = std::make_unique_for_overwrite<char[]>(kRelayBufferBytes);
    } else {
      relay_buffer_ = std::move(spare.back());
      spare.pop_back();
    }
  }
  return relay_buffer_.get();
}

}  // namespace
}  // namespace gw
