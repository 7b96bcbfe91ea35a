#include <doctest/doctest.h>

#include "gateway/proxy/rate_limit.hpp"

using namespace gw;
using namespace std::chrono;

namespace {
// Sun, 06 Nov 1994 08:49:37 GMT (RFC 9110's example date).
const system_clock::time_point kExample = system_clock::from_time_t(784111777);
}  // namespace

TEST_CASE("Retry-After in seconds") {
  CHECK(parse_retry_after("3", kExample) == seconds(3));
  CHECK(parse_retry_after(" 120 ", kExample) == seconds(120));
  CHECK(parse_retry_after("0", kExample) == seconds(0));
  // More than 15 minutes is honoured as 15 minutes, however many digits.
  CHECK(parse_retry_after("901", kExample) == kMaxCooldown);
  CHECK(parse_retry_after("99999999999999999999999999", kExample) == kMaxCooldown);
}

TEST_CASE("Retry-After as an HTTP-date, in its three forms") {
  auto before = kExample - seconds(30);
  CHECK(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", before) == seconds(30));
  CHECK(parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", before) == seconds(30));
  CHECK(parse_retry_after("Sun Nov  6 08:49:37 1994", before) == seconds(30));
  // A date already past asks for no wait; one far ahead for the cap.
  CHECK(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", kExample + hours(1)) == seconds(0));
  CHECK(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", kExample - hours(5)) == kMaxCooldown);
}

TEST_CASE("Retry-After that is neither is ignored") {
  for (const char* bad :
       {"", " ", "-1", "1.5", "3s", "soon", "Sun, 06 Nov 1994 08:49:37",
        "Sun, 06 Nov 1994 08:49:37 GMT trailing", "Sun, 32 Nov 1994 08:49:37 GMT", "0x10"})
    CHECK_MESSAGE(!parse_retry_after(bad, kExample), bad);
  // Found by fuzz_retry_after: an asctime date whose year reads as 4.
  CHECK(!parse_retry_after("Sun Nov  6 08:49:394", kExample));
  CHECK(!parse_retry_after("Sun, 06 Nov 0001 08:49:37 GMT", kExample));
  std::string long_value(100, '1');
  CHECK(!parse_retry_after(long_value, kExample));
}

TEST_CASE("what a cool-down has left, in whole seconds rounded up") {
  CHECK(cooldown_left_seconds(0, 1000) == 0);
  CHECK(cooldown_left_seconds(5000, 5000) == 0);
  CHECK(cooldown_left_seconds(5000, 4999) == 1);
  CHECK(cooldown_left_seconds(5000, 2000) == 3);
  CHECK(cooldown_left_seconds(5000, 1999) == 4);
  CHECK(starts_cooldown(429));
  CHECK(starts_cooldown(503));
  CHECK_FALSE(starts_cooldown(500));
  CHECK_FALSE(starts_cooldown(200));
}
