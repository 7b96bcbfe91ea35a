#include "gateway/auth/token_fetch.hpp"

#include <boost/asio/this_coro.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "gateway/auth/token_endpoint.hpp"
#include "gateway/config/url.hpp"

namespace gw {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

asio::awaitable<TokenResult> fetch_token(asio::any_io_executor executor,
                                         std::shared_ptr<asio::ssl::context> tls,
                                         TokenRequest request, Millis timeout) {
  auto transient = [](std::string what) {
    TokenResult r;
    r.failure = TokenFailure::transient;
    r.error = std::move(what);
    return r;
  };
  UpstreamTarget target;
  auto qpos = request.url.find('?');
  if (auto err = parse_upstream(request.url.substr(0, qpos), target); !err.empty())
    co_return transient("bad_token_url");
  std::string path = target.base_path.empty() ? "/" : target.base_path;
  if (qpos != std::string::npos) path += request.url.substr(qpos);

  beast::ssl_stream<beast::tcp_stream> stream(executor, *tls);
  auto& lowest = beast::get_lowest_layer(stream);
  lowest.expires_after(timeout);
  asio::ip::tcp::resolver resolver(executor);
  auto [rec, endpoints] = co_await resolver.async_resolve(target.host, target.port, nothrow);
  if (rec) co_return transient("unreachable");
  auto [cec, ep] = co_await lowest.async_connect(endpoints, nothrow);
  if (cec) co_return transient(cec == beast::error::timeout ? "timeout" : "unreachable");
  if (!target.ip_literal) SSL_set_tlsext_host_name(stream.native_handle(), target.host.c_str());
  stream.set_verify_mode(asio::ssl::verify_peer);
  stream.set_verify_callback(asio::ssl::host_name_verification(target.host));
  auto [hec] = co_await stream.async_handshake(asio::ssl::stream_base::client, nothrow);
  if (hec) co_return transient(hec == beast::error::timeout ? "timeout" : "tls_error");

  http::request<http::string_body> req{request.method == "GET" ? http::verb::get : http::verb::post,
                                       path, 11};
  req.set(http::field::host, target.host_header);
  req.set(http::field::user_agent, "gateway/" GATEWAY_VERSION);
  for (const auto& [k, v] : request.headers) req.set(k, v);
  if (request.method != "GET") {
    req.body() = request.body;
    req.prepare_payload();
  }
  req.keep_alive(false);
  auto [wec, wn] = co_await http::async_write(stream, req, nothrow);
  if (wec) co_return transient(wec == beast::error::timeout ? "timeout" : "send_failed");
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(256 * 1024);
  auto [pec, pn] = co_await http::async_read(stream, buffer, parser, nothrow);
  if (pec) co_return transient(pec == beast::error::timeout ? "timeout" : "bad_response");
  beast::error_code ignored;
  lowest.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  co_return parse_token_response(parser.get().result_int(), parser.get().body(), request.response);
}

asio::awaitable<TokenResult> HttpsTokenEndpoint::exchange(TokenRequest request, Millis timeout) {
  co_return co_await fetch_token(co_await asio::this_coro::executor, tls_(), std::move(request),
                                 timeout);
}

}  // namespace gw
