// Caller address ranges for listen.allow_from: parsing and matching (IPv4 and IPv6).
#include <arpa/inet.h>

#include "gateway/config/config.hpp"

namespace gw {

std::optional<Cidr> parse_cidr(const std::string& text) {
  Cidr c;
  c.text = text;
  std::string addr = text;
  auto slash = text.find('/');
  if (slash != std::string::npos) addr = text.substr(0, slash);
  if (inet_pton(AF_INET, addr.c_str(), c.bytes.data()) == 1) {
    c.v6 = false;
    c.prefix = 32;
  } else if (inet_pton(AF_INET6, addr.c_str(), c.bytes.data()) == 1) {
    c.v6 = true;
    c.prefix = 128;
  } else {
    return std::nullopt;
  }
  if (slash != std::string::npos) {
    std::string bits = text.substr(slash + 1);
    if (bits.empty() || bits.size() > 3 ||
        bits.find_first_not_of("0123456789") != std::string::npos)
      return std::nullopt;
    int n = std::stoi(bits);
    if (n > c.prefix) return std::nullopt;
    c.prefix = n;
  }
  return c;
}

bool cidr_contains(const Cidr& cidr, const std::array<std::uint8_t, 16>& addr, bool v6) {
  if (cidr.v6 != v6) return false;
  int full = cidr.prefix / 8, rest = cidr.prefix % 8;
  for (int i = 0; i < full; ++i)
    if (cidr.bytes[i] != addr[i]) return false;
  if (rest == 0) return true;
  std::uint8_t mask = static_cast<std::uint8_t>(0xff << (8 - rest));
  return (cidr.bytes[full] & mask) == (addr[full] & mask);
}

bool is_loopback_address(const std::string& address) {
  if (address == "localhost") return true;
  auto c = parse_cidr(address);
  if (!c) return false;
  if (!c->v6) return c->bytes[0] == 127;
  static const std::array<std::uint8_t, 16> one{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  return c->bytes == one;
}

}  // namespace gw
