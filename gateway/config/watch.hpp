// What a running gateway watches for changes: the config file, every file behind a ${file:}
// value, and the policy folders (SPEC 3). Read through their paths, so a Kubernetes Secret's
// atomic `..data` symlink swap changes the digest like an edit in place.
#pragma once
#include <string>

#include "gateway/config/config.hpp"

namespace gw {

// SHA-256 over the names and contents of everything `config` was built from; a file that
// cannot be read counts as "missing" (its return is a change too).
std::string watched_digest(const Config& config);

}  // namespace gw
