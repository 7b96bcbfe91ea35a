// libFuzzer target: token endpoint answers (JSON or not, any status), read with the default
// field mapping and with the other shapes a policy's token_response can name (nested dot
// paths, milliseconds, an absolute expires_at, a 2xx error field), plus the RFC 3339 reader.
// Classification must be total: a success carries a visible-ASCII access token and a
// lifetime of at most ten years, a failure carries an error code.
#include <chrono>
#include <cstdint>
#include <string>

#include "gateway/auth/oauth.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  unsigned status = 100 + (static_cast<unsigned>(data[0]) << 8 | data[1]) % 500;
  std::string_view body(reinterpret_cast<const char*>(data) + 3, size - 3);
  gw::TokenResponseMap map;
  switch (data[2] % 4) {
    case 1:
      map.access_token = "authed_user.access_token";
      map.refresh_token = "authed_user.refresh_token";
      map.expires_in = "authed_user.expires_in";
      break;
    case 2:
      map.expires_in_ms = true;
      break;
    case 3:
      map.expires_in = "absent";
      map.error = "data.error";
      break;
    default:
      break;
  }
  auto now = gw::Clock::time_point(std::chrono::seconds(1'800'000'000));
  auto r = gw::parse_token_response(status, body, map, now);
  if (r.failure == gw::TokenFailure::none) {
    if (r.access_token.empty() || status / 100 != 2 || !gw::visible_ascii(r.access_token))
      __builtin_trap();
    if (r.expires_in &&
        (r.expires_in->count() < 0 || *r.expires_in > std::chrono::hours(24 * 365 * 10)))
      __builtin_trap();
  } else if (r.error.empty()) {
    __builtin_trap();
  }
  if (auto t = gw::parse_rfc3339(body); t && *t < -86400) __builtin_trap();
  return 0;
}
