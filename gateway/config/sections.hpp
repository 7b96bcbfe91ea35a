// Configuration sections read outside config.cpp's loader (which would pass 400 lines).
#pragma once
#include "gateway/config/config.hpp"
#include "gateway/config/yaml_reader.hpp"

namespace gw {

// `notify:` (SPEC 3, 6.10): url (https, or http to a loopback address), secret, events.
void read_notify(YamlReader& reader, const YAML::Node& node, NotifyConfig& out);

}  // namespace gw
