// libFuzzer target: token endpoint answers (JSON or not, any status). Classification must be
// total: a success carries an access token, a failure carries an error code.
#include <cstdint>
#include <string>

#include "gateway/auth/oauth.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  unsigned status = 100 + (static_cast<unsigned>(data[0]) << 8 | data[1]) % 500;
  std::string_view body(reinterpret_cast<const char*>(data) + 2, size - 2);
  auto r = gw::parse_token_response(status, body);
  if (r.failure == gw::TokenFailure::none) {
    if (r.access_token.empty() || status / 100 != 2) __builtin_trap();
    if (r.expires_in && r.expires_in->count() < 0) __builtin_trap();
  } else if (r.error.empty()) {
    __builtin_trap();
  }
  return 0;
}
