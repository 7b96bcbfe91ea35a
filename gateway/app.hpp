// The composition root: loads the configuration, owns the event-loop threads, listeners,
// TLS contexts and long-lived parts, and handles reload and drain.
#pragma once
#include <filesystem>
#include <memory>
#include <string>

namespace gw {

// Loads config + policies + routes; prints every problem to stderr. Returns the exit code
// for --check (0 or 2) after printing the summary table to stdout.
int check_config(const std::filesystem::path& config_file);

// Serves until SIGTERM/SIGINT. Returns the process exit code.
int run_gateway(const std::filesystem::path& config_file);

}  // namespace gw
