// libFuzzer target: {placeholder} templates. Compiling either fails with a reason or yields
// pieces that render back to the source when each placeholder renders as "{name}".
#include <cstdint>
#include <string>

#include "gateway/policy/template.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view source(reinterpret_cast<const char*>(data), size);
  std::string error;
  auto t = gw::Template::compile(source, &error);
  if (!t) {
    if (error.empty()) __builtin_trap();
    return 0;
  }
  auto echo = [](std::string_view name) -> std::optional<std::string> {
    return "{" + std::string(name) + "}";
  };
  auto rendered = t->render(echo);
  if (!rendered) __builtin_trap();
  // Placeholders rendered as themselves give back a template that compiles to the same pieces.
  auto again = gw::Template::compile(*rendered, &error);
  if (!again || again->pieces().size() != t->pieces().size()) __builtin_trap();
  auto none = [](std::string_view) -> std::optional<std::string> { return std::nullopt; };
  std::string missing;
  auto r = t->render(none, &missing);
  bool has_placeholder = false;
  for (const auto& p : t->pieces()) has_placeholder |= p.placeholder;
  if (has_placeholder == r.has_value()) __builtin_trap();
  (void)t->host_placeholders();
  return 0;
}
