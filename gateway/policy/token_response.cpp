#include "gateway/policy/token_response.hpp"

#include <regex>
#include <utility>

namespace gw {

void read_token_response(YamlReader& reader, const YAML::Node& m, const std::string& path,
                         TokenResponseMap& out) {
  if (!reader.check_keys(m, path,
                         {"access_token", "refresh_token", "expires_in", "expires_in_unit",
                          "expires_at", "error"}))
    return;
  static const std::regex kPath("^[A-Za-z0-9_-]{1,64}([.][A-Za-z0-9_-]{1,64}){0,7}$");
  for (auto [key, field] : {std::pair{"access_token", &out.access_token},
                            {"refresh_token", &out.refresh_token},
                            {"expires_in", &out.expires_in},
                            {"expires_at", &out.expires_at},
                            {"error", &out.error}})
    if (reader.get(m, path, key, *field) && !std::regex_match(*field, kPath))
      reader.problem(m[key], path + "." + key,
                     "must be a dot path of field names, such as authed_user.access_token");
  if (std::string unit; reader.get(m, path, "expires_in_unit", unit)) {
    if (unit == "ms")
      out.expires_in_ms = true;
    else if (unit != "s")
      reader.problem(m["expires_in_unit"], path + ".expires_in_unit", "must be s or ms");
  }
}

}  // namespace gw
