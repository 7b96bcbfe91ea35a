// gateway --config FILE [--check] | --version
#include <cstring>
#include <iostream>
#include <string>

#include "gateway/app.hpp"

namespace {

int usage() {
  std::cerr
      << "usage: gateway --config FILE          serve\n"
         "       gateway --config FILE --check  validate config and policies, print a summary\n"
         "       gateway --version\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config;
  bool check = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--version") {
      std::cout << "gateway " << GATEWAY_VERSION << "\n";
      return 0;
    } else if (arg == "--check") {
      check = true;
    } else if (arg == "--config" && i + 1 < argc) {
      config = argv[++i];
    } else if (arg.rfind("--config=", 0) == 0) {
      config = arg.substr(9);
    } else {
      std::cerr << "gateway: unknown argument " << arg << "\n";
      return usage();
    }
  }
  if (config.empty()) return usage();
  try {
    return check ? gw::check_config(config) : gw::run_gateway(config);
  } catch (const std::exception& e) {
    std::cerr << "gateway: " << e.what() << "\n";
    return 1;
  }
}
