// One downstream connection: read a request head, route it, get the connection's
// credential, inject it, stream the request to the vendor, replay once if the vendor
// rejects the token, stream the answer back, log. The story of STYLE.md, in order.
//
// A template over the caller's stream (plain TCP or TLS), included only by
// session_plain.cpp and session_tls.cpp: one instantiation each, compiled in parallel.
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
#include <charconv>
#include <random>

#include "gateway/observability/log.hpp"
#include "gateway/observability/metrics.hpp"
#include "gateway/proxy/caller_socket.hpp"
#include "gateway/proxy/errors.hpp"
#include "gateway/proxy/indexed_parser.hpp"
#include "gateway/proxy/proxy.hpp"
#include "gateway/proxy/request_rules.hpp"
#include "gateway/proxy/response_rules.hpp"

namespace gw {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;
constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kRelayBufferBytes = 32 * 1024;

namespace {

std::string new_request_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char hex[] = "0123456789abcdef";
  std::string id(24, '0');
  for (std::size_t i = 0; i < id.size(); i += 16) {
    auto v = rng();
    for (std::size_t j = i; j < std::min(id.size(), i + 16); ++j, v >>= 4) id[j] = hex[v & 15];
  }
  return id;
}

bool usable_request_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id)
    if (c < 0x21 || c > 0x7e) return false;
  return true;
}

bool istarts_with(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
  return true;
}

double ms_since(SteadyClock::time_point t) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - t).count();
}

// What the access log says of one exchange.
struct Exchange {
  SteadyClock::time_point start = SteadyClock::now();
  std::string request_id, integration, connection, method, path;
  unsigned status = 0, upstream_status = 0;
  double upstream_ms = 0;
  bool retried = false;
  std::uint64_t bytes_in = 0, bytes_out = 0;
};

using RequestParser = CallerParser;
using ResponseParser = RelayParser;

template <class Stream>
class Session {
 public:
  Session(Stream& stream, Worker& worker) : stream_(stream), worker_(worker) {}

  asio::awaitable<void> run() {
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
      if (!keep_alive) break;
    }
    close();
  }

 private:
  // Every operation on the caller's connection runs under a deadline set just before it and
  // cleared just after (CallerSocket's deadline runs whether or not one is under way).
  CallerSocket& lowest() { return beast::get_lowest_layer(stream_); }

  void close() {
    beast::error_code ignored;
    lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
    lowest().close();
  }

  // Reads a request head within `timeout`. The connection's deadline would close the socket,
  // leaving no way to answer 408, so a timer cancels the read instead.
  asio::awaitable<std::pair<beast::error_code, bool>> read_head(RequestParser& parser,
                                                                Millis timeout) {
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
  beast::error_code parse_buffered_head(RequestParser& parser) {
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

  // Bare LF line ends and obs-fold continuation lines in a raw request head.
  static beast::error_code raw_head_problem(std::string_view head) {
    for (auto i = head.find('\n'); i != std::string_view::npos; i = head.find('\n', i + 1)) {
      if (i == 0 || head[i - 1] != '\r') return http::error::bad_line_ending;
      if (i + 1 < head.size() && (head[i + 1] == ' ' || head[i + 1] == '\t'))
        return http::error::bad_field;
    }
    return {};
  }

  // A head that could not be read: answer when the peer sent something, then close.
  asio::awaitable<void> reject_unreadable(beast::error_code ec, RequestParser& parser) {
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

  asio::awaitable<void> send_error(Exchange& ex, http::status status, std::string_view code,
                                   std::string message, bool keep_alive) {
    auto res = make_error_response(status, code, message, ex.request_id, keep_alive);
    ex.status = static_cast<unsigned>(status);
    lowest().expires_after(runtime_->config.limits.idle_timeout);
    auto [ec, n] = co_await http::async_write(stream_, res, nothrow);
    lowest().expires_never();
    ex.bytes_out += n;
    write_access_log(ex);
  }

  void write_access_log(const Exchange& ex) {
    metrics::request_done(ex.integration.empty() ? "none" : ex.integration, ex.method, ex.status,
                          ms_since(ex.start) / 1000);
    if (!runtime_->config.log.access_log) return;
    log::access({{"request_id", ex.request_id},
                 {"integration", ex.integration},
                 {"connection", ex.connection},
                 {"method", ex.method},
                 {"path", ex.path},
                 {"status", ex.status},
                 {"upstream_status", ex.upstream_status},
                 {"duration_ms", std::round(ms_since(ex.start) * 1000) / 1000},
                 {"upstream_ms", std::round(ex.upstream_ms * 1000) / 1000},
                 {"retried", ex.retried},
                 {"bytes_in", ex.bytes_in},
                 {"bytes_out", ex.bytes_out}});
  }

  bool peer_allowed() {
    const auto& allow = runtime_->config.listen.allow_from;
    if (allow.empty()) return true;
    beast::error_code ec;
    auto ep = lowest().socket().remote_endpoint(ec);
    if (ec) return false;
    std::array<std::uint8_t, 16> bytes{};
    auto addr = ep.address();
    if (addr.is_v6() && addr.to_v6().is_v4_mapped())
      addr = asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6());
    if (addr.is_v4()) {
      auto b = addr.to_v4().to_bytes();
      std::copy(b.begin(), b.end(), bytes.begin());
    } else {
      auto b = addr.to_v6().to_bytes();
      std::copy(b.begin(), b.end(), bytes.begin());
    }
    for (const auto& cidr : allow)
      if (cidr_contains(cidr, bytes, addr.is_v6())) return true;
    return false;
  }

  // Request smuggling forms the parser lets through: more than one Content-Length or one
  // that is not plain digits ("5, 5"); a Transfer-Encoding other than exactly "chunked"
  // (RFC 9112 6.3: chunked must be final, and we apply no other coding), or next to a
  // Content-Length.
  static std::string framing_problem(const RequestParser& req) {
    auto te = req.count(http::field::transfer_encoding);
    auto cl = req.count(http::field::content_length);
    if (te) {
      if (cl) return "both Content-Length and Transfer-Encoding";
      if (te > 1) return "more than one Transfer-Encoding header";
      if (!beast::iequals(req[http::field::transfer_encoding], "chunked"))
        return "Transfer-Encoding other than chunked";
    }
    if (!cl) return {};
    if (cl > 1) return "more than one Content-Length header";
    auto v = req[http::field::content_length];
    if (v.empty() || v.find_first_not_of("0123456789") != std::string_view::npos)
      return "Content-Length is not a number";
    return {};
  }

  // Where a request goes, or why it goes nowhere.
  struct Routed {
    const Integration* integration = nullptr;
    std::shared_ptr<Connection> connection;
    std::optional<SplitTarget> split;
    // When refused: the answer, and whether the connection must end after it.
    http::status status = http::status::ok;
    std::string_view code;
    std::string message;
    bool close = false;
  };

  static Routed refuse(http::status s, std::string_view code, std::string message,
                       bool close = false) {
    Routed r;
    r.status = s;
    r.code = code;
    r.message = std::move(message);
    r.close = close;
    return r;
  }

  // Checks the request and finds its integration and connection. Not a coroutine: each
  // refusal's temporaries would otherwise take their own room in every request's frame.
  Routed route(const RequestParser& req, Exchange& ex) {
    if (worker_.shared.draining.load())
      return refuse(http::status::service_unavailable, "shutting_down",
                    "the gateway is shutting down");
    if (!peer_allowed())
      return refuse(http::status::forbidden, "forbidden", "caller address not allowed");
    if (req.method() == http::verb::connect)
      return refuse(http::status::bad_request, "bad_request", "CONNECT is not supported");
    // A vendor that answers TRACE echoes the request it got, the injected credential in it.
    if (req.method() == http::verb::trace)
      return refuse(http::status::bad_request, "bad_request", "TRACE is not supported");
    if (auto framing = framing_problem(req); !framing.empty()) {
      // Beast accepts identical duplicates and lists; a proxy must not (the framing is
      // ambiguous to whoever parses the message next). The body is unread: the connection ends.
      return refuse(http::status::bad_request, "bad_request", framing, true);
    }
    Routed r;
    std::string why;
    r.split = split_target(req.target(), &why);
    if (!r.split) {
      ex.path = "";
      return refuse(http::status::bad_request, "bad_request", why);
    }
    const auto& routes = *runtime_->routes;
    auto iit = routes.integrations.find(r.split->integration);
    if (iit == routes.integrations.end())
      return refuse(http::status::not_found, "no_route",
                    "no integration named \"" + r.split->integration + "\"");
    const Integration& integ = *iit->second;
    r.integration = &integ;
    ex.integration = integ.config.name;
    ex.path = redact_query_params(req.target(), integ.injected_query_names);

    if (auto named = req["X-Gateway-Connection"]; !named.empty()) {
      auto cit = routes.connections.find(std::string_view(named.data(), named.size()));
      if (cit == routes.connections.end() || cit->second->integration != integ.config.name)
        return refuse(http::status::not_found, "unknown_connection",
                      "integration " + integ.config.name + " has no connection \"" +
                          std::string(named) + "\"");
      r.connection = cit->second;
    } else if (integ.default_connection) {
      r.connection = integ.default_connection;
    } else if (integ.connections.size() == 1) {
      r.connection = integ.connections.front();
    } else {
      return refuse(
          http::status::bad_request, "connection_required",
          "choose a connection of " + integ.config.name + " with the X-Gateway-Connection header");
    }
    ex.connection = r.connection->id;
    if (integ.config.allow && !allowed(*integ.config.allow, req.method_string(), r.split->path))
      return refuse(
          http::status::forbidden, "forbidden",
          ex.method + " " + r.split->path + " is outside the allow list of " + integ.config.name);
    return r;
  }

  // Returns whether the downstream connection stays open for another request.
  asio::awaitable<bool> handle(RequestParser& parser) {
    Exchange ex;
    auto rid = parser["X-Request-Id"];
    ex.request_id = usable_request_id(rid) ? std::string(rid) : new_request_id();
    ex.method = std::string(parser.method_string());
    ex.path = std::string(parser.target());
    // An unread body makes the connection unusable for a next request.
    bool keep_alive = parser.keep_alive() && !worker_.shared.draining.load();
    // HTTP/1.0 has no chunked framing: such a request's end is uncertain, so the connection
    // closes after the answer (RFC 9112 6.1).
    if (parser.version() < 11 && parser.chunked()) keep_alive = false;
    Routed r = route(parser, ex);
    if (r.connection) {
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

  // The upstream request head, written by hand into a buffer the connection keeps: the
  // caller's fields minus what must not travel, plus Host, our request id and the credential.
  // Framing and the blank line that ends the head are added as it is sent (set_framing).
  void upstream_head(const RequestParser& req, const Connection& conn, const SplitTarget& split,
                     const Credential& cred, const std::string& rid) {
    std::string& h = up_head_;
    h.clear();
    auto method = req.method_string();
    h.append(method.data(), method.size());
    h += ' ';
    h += conn.upstream.base_path;
    h += split.path;
    if (cred.kind == InjectKind::query) {
      h += '?';
      h += rewrite_query(split.query, cred.name, cred.value);
    } else if (split.has_query) {
      h += '?';
      h += split.query;
    }
    h += " HTTP/1.1\r\n";
    bool header_cred = cred.kind != InjectKind::query;
    auto tokens = connection_tokens(req[http::field::connection]);
    for (const auto& f : req.fields()) {
      auto n = req.name(f);
      if (is_hop_by_hop(n, tokens) || istarts_with(n, "x-gateway-")) continue;
      switch (f.name) {
        case http::field::authorization:
        case http::field::host:
        case http::field::expect:
        case http::field::content_length:
          continue;
        default:
          break;
      }
      if (istarts_with(n, "x-request-id") || (header_cred && beast::iequals(n, cred.name)))
        continue;
      h += n;
      h += ": ";
      h += req.value(f);
      h += "\r\n";
    }
    h += "Host: ";
    h += conn.upstream.host_header;
    h += "\r\nX-Request-Id: ";
    h += rid;
    h += "\r\n";
    if (header_cred) {
      h += cred.name;
      h += ": ";
      h += cred.value;
      h += "\r\n";
    }
    up_head_fields_end_ = h.size();
  }

  // Ends the upstream head with its framing: chunked, a length (also an explicit 0), or none.
  const std::string& set_framing(bool chunked, std::optional<std::uint64_t> length) {
    std::string& h = up_head_;
    h.resize(up_head_fields_end_);
    if (chunked) {
      h += "Transfer-Encoding: chunked\r\n";
    } else if (length) {
      h += "Content-Length: ";
      h += std::to_string(*length);
      h += "\r\n";
    }
    h += "\r\n";
    return h;
  }

  // Fills out[1..3] with one piece of a body: `got` bytes of `data`, framed as a chunk when
  // `chunked` (with the last chunk when `last`); out[0] is left for a head.
  static void frame_piece(std::array<asio::const_buffer, 4>& out, const char* data, std::size_t got,
                          bool chunked, bool last, char (&size_line)[24]) {
    if (chunked && got) {
      auto [end, ec] = std::to_chars(size_line, size_line + sizeof size_line - 2, got, 16);
      end[0] = '\r';
      end[1] = '\n';
      out[1] = asio::buffer(size_line, static_cast<std::size_t>(end + 2 - size_line));
    }
    if (got) out[2] = asio::buffer(data, got);
    if (chunked) {
      std::string_view tail = got && last ? "\r\n0\r\n\r\n"
                              : got       ? "\r\n"
                              : last      ? "0\r\n\r\n"
                                          : "";
      out[3] = asio::buffer(tail.data(), tail.size());
    }
  }

  struct Body {
    bool present = false;
    bool chunked = false;
    std::optional<std::uint64_t> length;
    std::string kept;  // the body, while it fits in replay_body_bytes
    bool complete_copy = true;
    beast::error_code caller_error;  // reading the caller's body failed (not the vendor)
  };

  // First attempt: stream the caller's body to the vendor, keeping a copy for a replay. The
  // head leaves with the first piece of the body (or alone when there is none).
  asio::awaitable<beast::error_code> send_streaming(UpstreamConnection& up, RequestParser& parser,
                                                    Body& body, Exchange& ex) {
    const auto& cfg = runtime_->config;
    const std::string& head = set_framing(body.chunked, body.length);
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
  asio::awaitable<std::pair<beast::error_code, std::size_t>> read_body_piece(RequestParser& parser,
                                                                             Body& body,
                                                                             Exchange& ex,
                                                                             char* buf) {
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
  asio::awaitable<beast::error_code> read_whole_body(RequestParser& parser, Body& body,
                                                     Exchange& ex) {
    char* buf = relay_buffer();
    while (!parser.is_done()) {
      auto [ec, got] = co_await read_body_piece(parser, body, ex, buf);
      if (ec) co_return ec;
    }
    co_return beast::error_code{};
  }

  // A replay: the head and the kept body, whole, in one write.
  asio::awaitable<beast::error_code> send_kept(UpstreamConnection& up, Body& body) {
    const std::string& head = set_framing(
        false, body.present || body.length ? std::optional<std::uint64_t>(body.kept.size())
                                           : std::nullopt);
    std::array<asio::const_buffer, 2> out{asio::buffer(head),
                                          asio::buffer(body.kept.data(), body.kept.size())};
    up.stream.expires_after(runtime_->config.upstream.response_timeout);
    co_return co_await up.stream.write(contiguous(out));
  }

  // The pieces of an upstream write copied into one buffer, for one SSL_write: OpenSSL then
  // fills whole 16 KiB records (a small head and body share one record and one write(2)).
  template <std::size_t N>
  asio::const_buffer contiguous(const std::array<asio::const_buffer, N>& pieces) {
    up_out_.clear();
    for (const auto& b : pieces) up_out_.append(static_cast<const char*>(b.data()), b.size());
    return asio::buffer(up_out_);
  }

  // Feeds the vendor's bytes to `rp`: the buffered ones first, reading more only when the
  // parser needs them (what Beast's read_some does, without its composed-operation layers).
  // Returns once the parser made progress: a head, body bytes (need_buffer when its buffer
  // is full), the end of the message, or an error.
  asio::awaitable<beast::error_code> read_upstream(UpstreamConnection& up, ResponseParser& rp) {
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

  static UpstreamFailure classify(beast::error_code ec) {
    if (ec == beast::error::timeout) return UpstreamFailure::timeout;
    if (ec.category() == asio::error::get_ssl_category()) return UpstreamFailure::protocol;
    if (ec == asio::error::connection_refused) return UpstreamFailure::unreachable;
    return UpstreamFailure::protocol;
  }

  asio::awaitable<bool> upstream_failed(Exchange& ex, UpstreamFailure f, const std::string& detail,
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
  asio::awaitable<bool> caller_body_failed(Exchange& ex, beast::error_code ec) {
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

  struct Trip {
    std::unique_ptr<UpstreamConnection> up;  // set when the response head arrived
    UpstreamFailure failure = UpstreamFailure::none;
    std::string detail;
    beast::error_code caller_error;  // the caller's body, not the vendor, failed
    bool reused = false;             // the connection came from the pool
    bool nothing_received = false;   // the failure left no byte of an answer
  };

  // One exchange up to the response head: a pooled (or, with `fresh`, a new) connection,
  // the request (streamed from the caller, or the kept copy), the head of the answer.
  asio::awaitable<Trip> round_trip(RequestParser& parser, Body& body, Exchange& ex,
                                   std::optional<ResponseParser>& rp, const UpstreamTarget& target,
                                   bool streaming, bool fresh) {
    const auto& cfg = runtime_->config;
    Trip trip;
    auto acquired =
        co_await worker_.pool.acquire(target, runtime_->client_tls, cfg.upstream, fresh);
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

  asio::awaitable<bool> forward(RequestParser& parser, Exchange& ex, const Integration& integ,
                                std::shared_ptr<Connection> conn, const SplitTarget& split,
                                std::shared_ptr<const Credential> cred, bool keep_alive) {
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

    bool replayable_method = policy.replay == ReplayMode::all || is_idempotent(ex.method);
    // Which request a rejection was for, so one the vendor refuses whatever the token stops
    // forcing refreshes (TokenProvider::rejected_again).
    std::size_t what =
        std::hash<std::string_view>{}(split.path) ^ (std::hash<std::string_view>{}(ex.method) << 1);
    bool stale_retried = false;
    for (int attempt = 0; attempt < 2; ++attempt) {
      upstream_head(req, *conn, split, *cred, ex.request_id);
      auto up_start = SteadyClock::now();
      std::optional<ResponseParser> rp;
      auto trip = co_await round_trip(parser, body, ex, rp, conn->upstream,
                                      /*streaming=*/attempt == 0 && !prebuffered,
                                      /*fresh=*/false);
      if (trip.caller_error) co_return co_await caller_body_failed(ex, trip.caller_error);
      if (trip.failure != UpstreamFailure::none && trip.reused && !stale_retried &&
          is_idempotent(ex.method) && parser.is_done() && (!body.present || body.complete_copy) &&
          trip.nothing_received) {
        // The vendor closed a pooled connection as we reused it, before answering a byte:
        // an idempotent request goes again, once, on a fresh connection. (Unlike a 401, a
        // silent close does not prove the request was not applied, so a POST is not resent
        // whatever the policy's `replay` says.)
        stale_retried = true;
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
      bool token_rejected = policy.reauth_on.count(ex.upstream_status) > 0;

      if (attempt == 0 && token_rejected) {
        bool can_replay = replayable_method && (!body.present || body.complete_copy);
        if (can_replay) {
          auto renewed = co_await worker_.shared.tokens->rejected(conn, cred, what);
          if (renewed.credential) {
            // Drop the rejected answer with its connection; replay with the new token.
            worker_.pool.discard(std::move(up));
            cred = renewed.credential;
            ex.retried = true;
            continue;
          }
          metrics::auth_retry(ex.integration, metrics::RetryResult::refresh_failed);
        } else {
          // Not replayable: the caller gets the vendor's answer; the token is renewed anyway.
          metrics::auth_retry(ex.integration, metrics::RetryResult::not_replayable);
          asio::co_spawn(worker_.ioc, worker_.shared.tokens->rejected(conn, cred, what),
                         asio::detached);
        }
      } else if (attempt == 1) {
        if (token_rejected) worker_.shared.tokens->rejected_again(*conn, *cred, what);
        metrics::auth_retry(ex.integration, token_rejected ? metrics::RetryResult::rejected_again
                                                           : metrics::RetryResult::replayed);
      }
      co_return co_await relay_response(*rp, std::move(up), ex, *cred, keep_alive, req.method());
    }
    co_return false;  // unreachable: the second attempt always relays
  }

  asio::awaitable<bool> relay_response(ResponseParser& rp, std::unique_ptr<UpstreamConnection> up,
                                       Exchange& ex, const Credential& cred, bool keep_alive,
                                       http::verb method) {
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
  char* relay_buffer() {
    if (!relay_buffer_) relay_buffer_ = std::make_unique_for_overwrite<char[]>(kRelayBufferBytes);
    return relay_buffer_.get();
  }

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

}  // namespace

// Serves a plain-TCP caller (session_plain.cpp); serve_downstream is in session_tls.cpp.
asio::awaitable<void> serve_plain_session(tcp::socket socket, Worker& worker);

}  // namespace gw
