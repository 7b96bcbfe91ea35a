#include <doctest/doctest.h>

#include <boost/beast/http/error.hpp>

#include "gateway/proxy/framing.hpp"

using namespace gw;
namespace http = boost::beast::http;

TEST_CASE("raw request heads: clean ones pass") {
  CHECK_FALSE(raw_head_problem("GET /chime/v1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n"));
  CHECK_FALSE(raw_head_problem("GET / HTTP/1.1\r\n"));
  CHECK_FALSE(raw_head_problem("GET / HTTP/1.1\r\nX-Spaced: a b\tc\r\n"));
  CHECK_FALSE(raw_head_problem(""));
}

TEST_CASE("raw request heads: bare LF and obs-fold are refused") {
  CHECK(raw_head_problem("GET / HTTP/1.1\nHost: x\r\n") == http::error::bad_line_ending);
  CHECK(raw_head_problem("GET / HTTP/1.1\r\nHost: x\n") == http::error::bad_line_ending);
  CHECK(raw_head_problem("\nGET / HTTP/1.1\r\n") == http::error::bad_line_ending);
  CHECK(raw_head_problem("GET / HTTP/1.1\r\nX-A: a\r\n b\r\n") == http::error::bad_field);
  CHECK(raw_head_problem("GET / HTTP/1.1\r\nX-A: a\r\n\tb\r\n") == http::error::bad_field);
  // A fold that would hide a Transfer-Encoding from whoever unfolds differently.
  CHECK(raw_head_problem("POST / HTTP/1.1\r\nX-A: a\r\n Transfer-Encoding: chunked\r\n") ==
        http::error::bad_field);
}

TEST_CASE("framing: the clean forms pass") {
  CHECK(framing_problem(0, "", 0, "").empty());
  CHECK(framing_problem(1, "chunked", 0, "").empty());
  CHECK(framing_problem(1, "Chunked", 0, "").empty());
  CHECK(framing_problem(0, "", 1, "0").empty());
  CHECK(framing_problem(0, "", 1, "1048576").empty());
}

TEST_CASE("framing: each smuggling form is refused") {
  CHECK(framing_problem(1, "chunked", 1, "5") == "both Content-Length and Transfer-Encoding");
  CHECK(framing_problem(2, "chunked", 0, "") == "more than one Transfer-Encoding header");
  CHECK(framing_problem(2, "chunked", 1, "5") == "both Content-Length and Transfer-Encoding");
  for (const char* te : {"gzip", "gzip, chunked", "chunked, chunked", "chunked, gzip", "identity",
                         " chunked", "chunked ", ""}) {
    CAPTURE(te);
    CHECK(framing_problem(1, te, 0, "") == "Transfer-Encoding other than chunked");
  }
  CHECK(framing_problem(0, "", 2, "5") == "more than one Content-Length header");
  for (const char* cl : {"5, 5", "5,5", "", "+5", "-1", " 5", "5 ", "0x10", "1e3"}) {
    CAPTURE(cl);
    CHECK(framing_problem(0, "", 1, cl) == "Content-Length is not a number");
  }
}
