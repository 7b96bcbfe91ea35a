// libFuzzer target: request-target validation and routing split, allow-list globs and the
// hop-by-hop rules. A target that passes has no dot segment, no NUL/CR/LF (raw or
// percent-encoded) and splits into a non-empty integration and a path starting with '/'.
#include <cctype>
#include <cstdint>
#include <string>

#include "gateway/proxy/request_rules.hpp"

namespace {

std::string decoded_lower(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += static_cast<char>(std::tolower(static_cast<unsigned char>(s[i])));
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string why;
  auto split = gw::split_target(input, &why);
  if (!split) {
    if (why.empty()) __builtin_trap();
  } else {
    if (split->integration.empty() || split->path.empty() || split->path[0] != '/')
      __builtin_trap();
    auto path = decoded_lower(split->path);
    if (path.find('\0') != std::string::npos || path.find('\r') != std::string::npos ||
        path.find('\n') != std::string::npos)
      __builtin_trap();
    std::string segs = path + "/";
    if (segs.find("/./") != std::string::npos || segs.find("/../") != std::string::npos)
      __builtin_trap();
    if (split->has_query != (input.find('?') != std::string_view::npos)) __builtin_trap();
  }
  // Globs: the input's first line is a pattern, the rest a path.
  auto nl = input.find('\n');
  if (nl != std::string_view::npos) {
    auto pattern = input.substr(0, nl), path = input.substr(nl + 1);
    bool m = gw::glob_match(pattern, path);
    if (pattern == path && pattern.find('*') == std::string_view::npos && !m) __builtin_trap();
    gw::AllowRule rule{{"GET"}, {std::string(pattern)}};
    if (gw::allowed({rule}, "GET", path) != m) __builtin_trap();
  }
  auto tokens = gw::connection_tokens(input);
  for (const auto& t : tokens)
    if (!gw::is_hop_by_hop(t, tokens)) __builtin_trap();
  return 0;
}
