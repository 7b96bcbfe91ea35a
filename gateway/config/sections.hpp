// Configuration sections read outside config.cpp's loader (which would pass 400 lines).
#pragma once
#include "gateway/config/config.hpp"
#include "gateway/config/yaml_reader.hpp"

namespace gw {

// `notify:` (SPEC 3, 6.10): url (https, or http to a loopback address), secret, events.
void read_notify(YamlReader& reader, const YAML::Node& node, NotifyConfig& out);
// `store.redis:` (SPEC 3): url, prefix, password, lock_lease, tls (files relative to `base`).
void read_redis(YamlReader& reader, const YAML::Node& node, const std::filesystem::path& base,
                RedisConfig& out);

}  // namespace gw
