// The gateway's own answers (session_impl.hpp tells the story): a head that could not be
// read, a vendor that failed, a caller's body that failed, each answered with
// make_error_response (errors.hpp) when the connection still allows it, and logged.
#pragma once
#include "gateway/proxy/session_impl.hpp"

namespace gw {
namespace {

// A head that could not be read: answer when the peer sent something, then close.
template <class Stream>
inline asio::awaitable<void> Session<Stream>::reject_unreadable(beast::error_code ec,
                                                                RequestParser& parser) {
  if (ec == http::error::end_of_stream || ec == asio::error::connection_reset ||
      ec == asio::error::operation_aborted)
    co_return;
  Exchange ex;
  ex.request_id = new_request_id();
  if (ec == beast::error::timeout) {
    if (buffer_.size() == 0 && !parser.got_some()) co_return;
    co_await send_error(ex, http::status::request_timeout, "request_timeout",
                        "the request head did not arrive within header_timeout", false);
  } else if (ec == http::error::header_limit) {
    co_await send_error(ex, http::status::request_header_fields_too_large, "headers_too_large",
                        "the request head is larger than max_header_bytes", false);
  } else if (ec == http::error::body_limit) {
    co_await send_error(ex, http::status::payload_too_large, "body_too_large",
                        "the request body is larger than max_body_bytes", false);
  } else {
    co_await send_error(ex, http::status::bad_request, "bad_request",
                        "malformed request: " + ec.message(), false);
  }
}

template <class Stream>
inline asio::awaitable<void> Session<Stream>::send_error(Exchange& ex, http::status status,
                                                         std::string_view code, std::string message,
                                                         bool keep_alive,
                                                         std::int64_t retry_after_s) {
  auto res = make_error_response(status, code, message, ex.request_id, keep_alive);
  if (retry_after_s > 0) res.set(http::field::retry_after, std::to_string(retry_after_s));
  ex.status = static_cast<unsigned>(status);
  lowest().expires_after(runtime_->config.limits.idle_timeout);
  auto [ec, n] = co_await http::async_write(stream_, res, nothrow);
  lowest().expires_never();
  ex.bytes_out += n;
  write_access_log(ex);
}

template <class Stream>
inline asio::awaitable<bool> Session<Stream>::upstream_failed(Exchange& ex, UpstreamFailure f,
                                                              const std::string& detail,
                                                              bool keep_alive) {
  log::event(log::Level::warn, "upstream request failed",
             {{"request_id", ex.request_id},
              {"integration", ex.integration},
              {"error", failure_code(f)},
              {"detail", detail}});
  auto status = f == UpstreamFailure::timeout ? http::status::gateway_timeout
                : f == UpstreamFailure::busy  ? http::status::service_unavailable
                                              : http::status::bad_gateway;
  std::string msg;
  switch (f) {
    case UpstreamFailure::unreachable:
      msg = "the vendor could not be reached";
      break;
    case UpstreamFailure::tls:
      msg = "the vendor's TLS certificate or handshake failed verification";
      break;
    case UpstreamFailure::timeout:
      msg = "the vendor did not answer in time";
      break;
    case UpstreamFailure::busy:
      msg = "every connection to the vendor allowed by upstream.max_per_host is in use";
      break;
    default:
      msg = "the vendor's answer was not valid HTTP";
      break;
  }
  co_await send_error(ex, status, failure_code(f), msg, keep_alive);
  co_return keep_alive;
}

// The caller's body could not be read (malformed chunks, too large, hang-up, stall):
// answer when the socket still allows it, then close. The vendor's side was dropped.
template <class Stream>
inline asio::awaitable<bool> Session<Stream>::caller_body_failed(Exchange& ex,
                                                                 beast::error_code ec) {
  if (ec == http::error::body_limit) {
    co_await send_error(ex, http::status::payload_too_large, "body_too_large",
                        "the request body is larger than max_body_bytes", false);
  } else if (ec == http::error::end_of_stream || ec == http::error::partial_message ||
             ec == asio::error::eof || ec == asio::error::connection_reset ||
             ec == beast::error::timeout || ec == asio::error::operation_aborted) {
    ex.status = 499;  // gone or stalled: nobody to answer (a timeout closed the socket)
    write_access_log(ex);
  } else {
    co_await send_error(ex, http::status::bad_request, "bad_request",
                        "malformed request body: " + ec.message(), false);
  }
  co_return false;
}

}  // namespace
}  // namespace gw
