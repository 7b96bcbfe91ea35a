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
