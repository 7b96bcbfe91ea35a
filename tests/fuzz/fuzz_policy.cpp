// libFuzzer target: policy files (YAML, templates, grants, inject rules). Any input must end in
// a policy or a ConfigError listing problems; a loaded policy's templates must render.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "gateway/config/config.hpp"
#include "gateway/policy/policy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::filesystem::path dir = "/tmp/gateway-fuzz-policy-" + std::to_string(getpid());
  static const bool made = std::filesystem::create_directories(dir) || true;
  (void)made;
  {
    std::ofstream out(dir / "p.yaml", std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    auto policies = gw::load_policies({dir});
    for (const auto& [name, p] : policies) {
      auto any = [](std::string_view) -> std::optional<std::string> { return "v"; };
      (void)p->upstream.render(any);
    }
  } catch (const gw::ConfigError& e) {
    if (e.problems().empty()) __builtin_trap();
  }
  return 0;
}
