#include <doctest/doctest.h>

#include <string>

#include "gateway/proxy/exchange.hpp"

using namespace gw;

TEST_CASE("usable_request_id: 1 to 128 visible ASCII characters") {
  CHECK_FALSE(usable_request_id(""));
  CHECK(usable_request_id("a"));
  CHECK(usable_request_id(std::string(128, 'x')));
  CHECK_FALSE(usable_request_id(std::string(129, 'x')));
  CHECK(usable_request_id("!~req-42_ABC.def/+=:"));
  for (const char* bad : {"a b", "a\tb", "a\r\nX-Evil: 1", "\x7f", "caf\xc3\xa9", " "}) {
    CAPTURE(bad);
    CHECK_FALSE(usable_request_id(bad));
  }
  CHECK_FALSE(usable_request_id(std::string_view("a\0b", 3)));
}

TEST_CASE("new_request_id: 24 hex digits, fresh each time") {
  auto a = new_request_id(), b = new_request_id();
  CHECK(a.size() == 24);
  CHECK(a.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(usable_request_id(a));
  CHECK(a != b);
}

TEST_CASE("an exchange starts clean") {
  Exchange ex;
  CHECK(ex.status == 0);
  CHECK(ex.upstream_status == 0);
  CHECK_FALSE(ex.retried);
  CHECK(ex.bytes_in == 0);
  CHECK(ex.bytes_out == 0);
  CHECK(ms_since(ex.start) >= 0);
}

TEST_CASE("traceparent: the trace id of a well-formed W3C header, else nothing") {
  CHECK(traceparent_trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") ==
        "4bf92f3577b34da6a3ce929d0e0e4736");
  // A later version may append fields.
  CHECK(traceparent_trace_id("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x") ==
        "4bf92f3577b34da6a3ce929d0e0e4736");
  for (const char* bad :
       {"", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",    // uppercase
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",    // all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",    // all-zero parent
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    // invalid version
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",  // v00 has no extra
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}) {
    CAPTURE(bad);
    CHECK(traceparent_trace_id(bad).empty());
  }
}
