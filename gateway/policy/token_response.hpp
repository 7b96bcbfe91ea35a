// The policy loader's reading of `oauth.token_response` (SPEC 4): where a vendor's token
// answer keeps its fields. The answer itself is read by parse_token_response (auth/oauth.hpp).
#pragma once
#include <yaml-cpp/yaml.h>

#include <string>

#include "gateway/config/yaml_reader.hpp"
#include "gateway/policy/policy.hpp"

namespace gw {

// Each field a dot path of at most 8 names ([A-Za-z0-9_-]); expires_in_unit s or ms. Problems
// go to `reader`, naming `path`.
void read_token_response(YamlReader& reader, const YAML::Node& map, const std::string& path,
                         TokenResponseMap& out);

}  // namespace gw
