#include "gateway/admin/admin_server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

namespace gw {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

AdminServer::AdminServer(asio::io_context& ioc, ProxyShared& shared,
                         std::unique_ptr<tcp::acceptor>& acceptor)
    : ioc_(ioc), shared_(shared), acceptor_(acceptor) {}

void AdminServer::start() {
  asio::co_spawn(ioc_, accept_loop(), asio::detached);
}

void AdminServer::stop() {
  boost::system::error_code ignored;
  acceptor_->close(ignored);
}

asio::awaitable<void> AdminServer::accept_loop() {
  for (;;) {
    auto [ec, socket] = co_await acceptor_->async_accept(nothrow);
    if (ec) {
      if (!acceptor_->is_open()) co_return;
      continue;
    }
    asio::co_spawn(ioc_, serve(std::move(socket)), asio::detached);
  }
}

asio::awaitable<void> AdminServer::serve(tcp::socket socket) {
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(1024 * 1024);
    stream.expires_after(std::chrono::seconds(30));
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, nothrow);
    if (ec) co_return;
    auto& req = parser.get();
    http::response<http::string_body> res{http::status::ok, 11};
    res.set(http::field::content_type, "application/json");
    std::string_view target(req.target().data(), req.target().size());
    nlohmann::json body;
    if (target == "/healthz") {
      body = {{"status", "ok"}};
    } else if (target == "/readyz") {
      std::vector<std::string> reasons;
      if (shared_.draining.load()) reasons.push_back("shutting down");
      if (!shared_.runtime.load()) reasons.push_back("no configuration loaded");
      if (reasons.empty()) {
        body = {{"status", "ready"}};
      } else {
        res.result(http::status::service_unavailable);
        body = {{"status", "not ready"}, {"reasons", reasons}};
      }
    } else {
      res.result(http::status::not_found);
      body = {{"error", "not_found"}, {"message", "no admin endpoint " + std::string(target)}};
    }
    res.body() = body.dump();
    res.keep_alive(req.keep_alive());
    res.prepare_payload();
    stream.expires_after(std::chrono::seconds(30));
    auto [wec, wn] = co_await http::async_write(stream, res, nothrow);
    if (wec || !req.keep_alive()) break;
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

}  // namespace gw
