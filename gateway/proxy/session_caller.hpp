// The caller's side (session_impl.hpp tells the story): whether its address may use the
// proxy, and its request head read within header_timeout and checked raw before Beast
// parses it.
#pragma once
#include "gateway/proxy/session_impl.hpp"

namespace gw {
namespace {

// Whether the caller's address passes listen.allow_from (any does when it is empty; none
// whose address cannot be read).
template <class Stream>
inline bool Session<Stream>::peer_ok() {
  const auto& allow = runtime_->config.listen.allow_from;
  if (allow.empty()) return true;
  beast::error_code ec;
  auto ep = lowest().socket().remote_endpoint(ec);
  if (ec) return false;
  return peer_allowed(allow, ep.address());
}

// Reads a request head within `timeout`. The connection's deadline would close the socket,
// leaving no way to answer 408, so a timer cancels the read instead.
template <class Stream>
inline asio::awaitable<std::pair<beast::error_code, bool>> Session<Stream>::read_head(
    RequestParser& parser, Millis timeout) {
  // Usually the whole head came with the first read: parse it in place, with no timer
  // and no further I/O.
  if (auto ec = parse_buffered_head(parser); ec != http::error::need_more)
    co_return std::pair{ec, false};
  struct Deadline {
    bool done = false, fired = false;
  };
  auto deadline = std::make_shared<Deadline>();
  asio::steady_timer timer(stream_.get_executor(), timeout);
  timer.async_wait([deadline, &socket = lowest().socket()](beast::error_code ec) {
    if (ec || deadline->done) return;  // the read finished first; the socket may be gone
    deadline->fired = true;
    socket.cancel();
  });
  lowest().expires_never();
  // The whole head is checked raw before Beast parses it: Beast unfolds obs-fold lines
  // silently, which a proxy must refuse (RFC 9112 5.2) rather than pass on re-framed.
  beast::error_code ec;
  for (;;) {
    std::string_view raw(static_cast<const char*>(buffer_.data().data()), buffer_.size());
    if (auto end = raw.find("\r\n\r\n"); end != std::string_view::npos) {
      ec = raw_head_problem(raw.substr(0, end + 2));
      break;
    }
    if (raw.find("\n\n") != std::string_view::npos) {
      ec = http::error::bad_line_ending;
      break;
    }
    if (buffer_.size() > runtime_->config.limits.max_header_bytes)
      break;  // Beast answers header_limit
    auto [rec, rn] = co_await stream_.async_read_some(buffer_.prepare(4096), nothrow);
    if (rec) {
      ec = rec != asio::error::eof ? rec
           : buffer_.size() == 0   ? beast::error_code(http::error::end_of_stream)
                                   : beast::error_code(http::error::partial_message);
      break;
    }
    buffer_.commit(rn);
  }
  if (!ec) {
    auto [pec, n] = co_await http::async_read_header(stream_, buffer_, parser, nothrow);
    ec = pec;
  }
  deadline->done = true;
  timer.cancel();
  co_return std::pair{ec, deadline->fired};
}

// Parses a head that is wholly in buffer_ (checked raw first); need_more when it is not.
template <class Stream>
inline beast::error_code Session<Stream>::parse_buffered_head(RequestParser& parser) {
  std::string_view raw(static_cast<const char*>(buffer_.data().data()), buffer_.size());
  auto end = raw.find("\r\n\r\n");
  if (end == std::string_view::npos) return http::error::need_more;
  if (auto ec = raw_head_problem(raw.substr(0, end + 2))) return ec;
  beast::error_code ec;
  auto used = parser.put(asio::buffer(raw.data(), end + 4), ec);
  buffer_.consume(used);
  if (!ec && !parser.is_header_done()) ec = http::error::need_more;
  return ec;
}

}  // namespace
}  // namespace gw
