// libFuzzer target: the config loader (YAML, ${env:}/${file:} references, units, every key).
// Any input must end in a Config or a ConfigError listing problems; nothing else may escape.
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <string>

#include "gateway/config/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = "/tmp/gateway-fuzz-config-" + std::to_string(getpid()) + ".yaml";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    gw::load_config(path);
  } catch (const gw::ConfigError& e) {
    if (e.problems().empty()) __builtin_trap();  // an error must say what is wrong
  }
  return 0;
}
