#include <doctest/doctest.h>

#include <boost/asio/buffer.hpp>

#include "gateway/proxy/indexed_parser.hpp"

using namespace gw;
namespace http = boost::beast::http;

namespace {

// Feeds `wire` in pieces of `step` bytes, as reads would; collects the body through a
// relay buffer of `room` bytes.
std::string feed(RelayParser& p, std::string_view wire, std::size_t step, std::size_t room,
                 boost::system::error_code& ec) {
  std::string body, pending;
  std::vector<char> buf(room);
  std::size_t at = 0;
  while (!p.is_done()) {
    if (at < wire.size()) {
      pending.append(wire.substr(at, step));
      at += step;
    } else if (pending.empty()) {
      break;
    }
    for (;;) {
      p.body_buffer(buf.data(), buf.size());
      auto used = p.put(boost::asio::buffer(pending), ec);
      pending.erase(0, used);
      body.append(buf.data(), buf.size() - p.body_left());
      if (ec == http::error::need_buffer) {
        ec = {};
        continue;
      }
      if (ec == http::error::need_more) ec = {};
      if (ec || used == 0 || p.is_done()) break;
    }
    if (ec) break;
  }
  return body;
}

}  // namespace

TEST_CASE("RelayParser keeps the head in one string and relays a chunked body") {
  std::string text;
  std::vector<IndexedField> fields;
  const std::string wire =
      "HTTP/1.1 201 Created Here\r\nX-One: a\r\nConnection: keep-alive, X-One\r\n"
      "Set-Cookie: s=1\r\nSet-Cookie: t=2\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer: x\r\n\r\n";
  for (std::size_t step : {1u, 7u, 4096u}) {
    RelayParser p(text, fields);
    boost::system::error_code ec;
    auto body = feed(p, wire, step, 4, ec);
    CHECK_FALSE(ec);
    CHECK(p.is_done());
    CHECK(body == "helloabcdefghijklmnopqrstuvwxyz");
    CHECK(p.status() == 201);
    CHECK(p.reason() == "Created Here");
    CHECK(p.chunked());
    CHECK(p.keep_alive());
    REQUIRE(p.fields().size() == 6);  // the trailer comes last, after the body
    CHECK(p.name(p.fields()[5]) == "Trailer");
    CHECK(p.name(p.fields()[0]) == "X-One");
    CHECK(p.value(p.fields()[0]) == "a");
    CHECK(p.value(p.fields()[2]) == "s=1");
    CHECK(p.value(p.fields()[3]) == "t=2");
    CHECK(p[http::field::connection] == "keep-alive, X-One");
    CHECK(p[http::field::location].empty());
  }
}

TEST_CASE("RelayParser: a new answer clears the last one's head; lengths and need_buffer") {
  std::string text;
  std::vector<IndexedField> fields;
  {
    RelayParser first(text, fields);
    boost::system::error_code ec;
    feed(first, "HTTP/1.1 100 Continue\r\nA: b\r\n\r\n", 4096, 16, ec);
    CHECK(first.status() == 100);
  }
  RelayParser p(text, fields);
  boost::system::error_code ec;
  auto body = feed(p, "HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", 3, 3, ec);
  CHECK_FALSE(ec);
  CHECK(body == "0123456789");
  CHECK(p.fields().size() == 1);
  CHECK(p.reason() == "OK");
  CHECK_FALSE(p.keep_alive());  // HTTP/1.0 without keep-alive
  // No buffer set: body bytes are refused, not dropped.
  RelayParser q(text, fields);
  std::string wire = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
  auto used = q.put(boost::asio::buffer(wire), ec);
  CHECK_FALSE(ec);
  CHECK(q.is_header_done());
  used = q.put(boost::asio::buffer(wire.substr(used)), ec);
  CHECK(ec == http::error::need_buffer);
  CHECK(used == 0);
}

TEST_CASE("CallerParser keeps the request line and fields; looks names up either way") {
  std::string text;
  std::vector<IndexedField> fields;
  CallerParser p(text, fields);
  const std::string wire =
      "PATCH /chime/v1/leads?x=1 HTTP/1.1\r\nHost: gw\r\nx-request-id: abc\r\n"
      "Content-Length: 4\r\nX-Gateway-Connection: acme\r\n\r\nbody";
  boost::system::error_code ec;
  auto used = p.put(boost::asio::buffer(wire), ec);
  CHECK_FALSE(ec);
  REQUIRE(p.is_header_done());
  CHECK(p.method() == http::verb::patch);
  CHECK(p.method_string() == "PATCH");
  CHECK(p.target() == "/chime/v1/leads?x=1");
  CHECK(p["X-Request-Id"] == "abc");
  CHECK(p["x-gateway-connection"] == "acme");
  CHECK(p[http::field::host] == "gw");
  CHECK(p.count(http::field::content_length) == 1);
  CHECK(p.count(http::field::transfer_encoding) == 0);
  CHECK(p.keep_alive());
  char buf[8];
  p.body_buffer(buf, sizeof buf);
  p.put(boost::asio::buffer(wire.substr(used)), ec);
  CHECK_FALSE(ec);
  CHECK(p.is_done());
  CHECK(std::string(buf, sizeof buf - p.body_left()) == "body");
}
