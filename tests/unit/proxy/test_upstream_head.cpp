#include <doctest/doctest.h>

#include <boost/asio/buffer.hpp>

#include <string>
#include <vector>

#include "gateway/proxy/upstream_head.hpp"

using namespace gw;

namespace {

// A caller's request head, parsed as the session parses it.
struct Request {
  std::string text;
  std::vector<IndexedField> fields;
  CallerParser parser{text, fields};
  SplitTarget split;

  explicit Request(std::string_view wire) {
    boost::system::error_code ec;
    parser.put(boost::asio::buffer(wire.data(), wire.size()), ec);
    REQUIRE_FALSE(ec);
    REQUIRE(parser.is_header_done());
    std::string why;
    auto s = split_target(parser.target(), &why);
    REQUIRE(s);
    split = *s;
  }
};

UpstreamTarget vendor(std::string base_path = "") {
  UpstreamTarget t;
  t.host = "vendor.example";
  t.port = "443";
  t.host_header = "vendor.example";
  t.base_path = std::move(base_path);
  return t;
}

Credential header_credential(std::string name, std::string value) {
  Credential c;
  c.kind = InjectKind::header;
  c.name = std::move(name);
  c.value = std::move(value);
  return c;
}

std::size_t occurrences(std::string_view text, std::string_view what) {
  std::size_t n = 0;
  for (auto i = text.find(what); i != std::string_view::npos; i = text.find(what, i + 1)) ++n;
  return n;
}

std::string joined(const std::array<boost::asio::const_buffer, 4>& out) {
  std::string s;
  for (const auto& b : out) s.append(static_cast<const char*>(b.data()), b.size());
  return s;
}

}  // namespace

TEST_CASE("upstream head: what must not travel is removed, the credential added once") {
  Request req(
      "GET /chime/v1/leads?page=2 HTTP/1.1\r\n"
      "Host: gateway.local\r\n"
      "Connection: keep-alive, X-Drop\r\n"
      "Keep-Alive: timeout=5\r\n"
      "X-Drop: named by Connection\r\n"
      "TE: trailers\r\n"
      "Trailer: X-Sum\r\n"
      "Upgrade: h2c\r\n"
      "Proxy-Authorization: Basic eA==\r\n"
      "Authorization: Bearer the-callers\r\n"
      "X-Gateway-Connection: acme\r\n"
      "x-gateway-anything: 1\r\n"
      "Expect: 100-continue\r\n"
      "Content-Length: 0\r\n"
      "X-Request-Id: callers-id\r\n"
      "Accept: application/json\r\n"
      "X-Custom: kept\r\n"
      "\r\n");
  std::string out = "left over from the last request";
  auto end = upstream_head(out, req.parser, vendor("/api/v2"), req.split,
                           header_credential("Authorization", "Bearer T"), "rid-1");
  CHECK(end == out.size());
  CHECK(out ==
        "GET /api/v2/v1/leads?page=2 HTTP/1.1\r\n"
        "Accept: application/json\r\n"
        "X-Custom: kept\r\n"
        "Host: vendor.example\r\n"
        "X-Request-Id: rid-1\r\n"
        "Authorization: Bearer T\r\n");
  CHECK(occurrences(out, "Authorization") == 1);
}

TEST_CASE("upstream head: a caller's field of the injected header's name is dropped") {
  Request req(
      "POST /comm100/agents HTTP/1.1\r\nX-Api-Key: callers-key\r\nx-api-key: again\r\n"
      "Authorization: Basic eA==\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\n");
  std::string out;
  auto end = upstream_head(out, req.parser, vendor(), req.split,
                           header_credential("X-Api-Key", "K"), "rid-2");
  CHECK(out.substr(0, end) ==
        "POST /agents HTTP/1.1\r\n"
        "Content-Type: text/plain\r\n"
        "Host: vendor.example\r\n"
        "X-Request-Id: rid-2\r\n"
        "X-Api-Key: K\r\n");
  CHECK(occurrences(out, "callers-key") == 0);
}

TEST_CASE("upstream head: a query credential replaces the caller's") {
  Request req(
      "GET /chip/v1/savings?access_token=callers&page=2&access_token=more HTTP/1.1\r\n"
      "Authorization: Bearer x\r\nAccept: */*\r\n\r\n");
  Credential cred;
  cred.kind = InjectKind::query;
  cred.name = "access_token";
  cred.value = "ab+c/d=";
  std::string out;
  upstream_head(out, req.parser, vendor(), req.split, cred, "rid-3");
  CHECK(out ==
        "GET /v1/savings?page=2&access_token=ab%2Bc%2Fd%3D HTTP/1.1\r\n"
        "Accept: */*\r\n"
        "Host: vendor.example\r\n"
        "X-Request-Id: rid-3\r\n");
  CHECK(occurrences(out, "callers") == 0);

  Request bare("GET /chip/v1/savings HTTP/1.1\r\n\r\n");
  upstream_head(out, bare.parser, vendor(), bare.split, cred, "rid-4");
  CHECK(out.rfind("GET /v1/savings?access_token=ab%2Bc%2Fd%3D HTTP/1.1\r\n", 0) == 0);
}

TEST_CASE("upstream head: the caller's query travels as sent with a header credential") {
  Request req("GET /chime/v1/leads?a=1&b=%20 HTTP/1.1\r\n\r\n");
  std::string out;
  upstream_head(out, req.parser, vendor(), req.split, header_credential("Authorization", "B"), "r");
  CHECK(out.rfind("GET /v1/leads?a=1&b=%20 HTTP/1.1\r\n", 0) == 0);
}

TEST_CASE("set_framing ends the head, again and differently for a replay") {
  Request req("PUT /chime/v1/x HTTP/1.1\r\nContent-Length: 5\r\n\r\n");
  std::string head;
  auto end = upstream_head(head, req.parser, vendor(), req.split,
                           header_credential("Authorization", "B"), "r");
  const std::string fields = head;
  CHECK(set_framing(head, end, false, 5) == fields + "Content-Length: 5\r\n\r\n");
  CHECK(set_framing(head, end, true, std::nullopt) ==
        fields + "Transfer-Encoding: chunked\r\n\r\n");
  CHECK(set_framing(head, end, true, 5) == fields + "Transfer-Encoding: chunked\r\n\r\n");
  CHECK(set_framing(head, end, false, 0) == fields + "Content-Length: 0\r\n\r\n");
  CHECK(set_framing(head, end, false, std::nullopt) == fields + "\r\n");
  CHECK(&set_framing(head, end, false, 1) == &head);
}

TEST_CASE("frame_piece frames a body piece as a chunk or as is") {
  const std::string data(26, 'a');
  char size_line[24];
  auto piece = [&](std::size_t got, bool chunked, bool last) {
    std::array<boost::asio::const_buffer, 4> out{};
    frame_piece(out, data.data(), got, chunked, last, size_line);
    CHECK(out[0].size() == 0);  // left for a head
    return joined(out);
  };
  CHECK(piece(5, true, false) == "5\r\naaaaa\r\n");
  CHECK(piece(26, true, true) == "1a\r\n" + data + "\r\n0\r\n\r\n");
  CHECK(piece(0, true, true) == "0\r\n\r\n");
  CHECK(piece(0, true, false) == "");
  CHECK(piece(5, false, false) == "aaaaa");
  CHECK(piece(5, false, true) == "aaaaa");
  CHECK(piece(0, false, true) == "");
}
