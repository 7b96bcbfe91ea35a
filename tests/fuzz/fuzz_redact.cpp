// libFuzzer target: redaction of a secret from text a vendor or caller controls (a header
// value, an echoed URL). Input: the secret, a \x01, then the text. Afterwards no spelling of
// the secret is left (raw, percent-encoded in either hex case, '+' for a space), the text is
// unchanged where there was none, and nothing reads past the text (a cut "%2" at the end).
#include <cstdint>
#include <string>
#include <vector>

#include "gateway/proxy/request_rules.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  auto cut = input.find('\x01');
  if (cut == std::string_view::npos || cut == 0) return 0;
  std::vector<std::string> secrets{std::string(input.substr(0, cut))};
  const std::string original(input.substr(cut + 1));
  std::string text = original;
  bool needed = gw::needs_redaction(text, secrets);
  bool changed = gw::redact(text, secrets);
  if (needed != changed) __builtin_trap();
  if (!changed && text != original) __builtin_trap();
  if (changed && text.find("REDACTED") == std::string::npos) __builtin_trap();
  // A secret can straddle the REDACTED marker only when it starts or ends with its letters.
  const auto& s = secrets[0];
  bool checkable = std::string_view("REDACT").find(s.front()) == std::string_view::npos &&
                   std::string_view("REDACT").find(s.back()) == std::string_view::npos;
  if (checkable && gw::needs_redaction(text, secrets)) __builtin_trap();
  return 0;
}
