// A small layer over yaml-cpp used by the config and policy loaders: typed getters that
// record "file:line: key: problem" instead of throwing, unknown-key detection, and
// ${env:NAME} / ${file:PATH} substitution in every string.
#pragma once
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/config/config.hpp"

namespace gw {

class YamlReader {
 public:
  // `references`: whether ${env:NAME} and ${file:PATH} are expanded (the config) or refused
  // (a policy file).
  YamlReader(std::filesystem::path file, Problems& problems, bool references = true);

  // Parses the file; nullopt (and a problem) when it cannot be read or parsed.
  std::optional<YAML::Node> load();

  const std::string& file_name() const { return name_; }
  std::string where(const YAML::Node& node) const;
  void problem(const YAML::Node& node, const std::string& key, const std::string& what);
  // A mapping key as text; a problem (and nullopt) for a key that is itself a list or map.
  std::optional<std::string> key_name(const YAML::Node& key, const std::string& path);

  // Reports every key of `map` not in `allowed`. Returns false if `map` is not a mapping.
  bool check_keys(const YAML::Node& map, const std::string& path,
                  std::initializer_list<std::string_view> allowed);

  // Getters: absent key leaves `out` unchanged and returns false; a bad value is a problem.
  bool get(const YAML::Node& map, const std::string& path, const char* key, std::string& out);
  bool get(const YAML::Node& map, const std::string& path, const char* key, bool& out);
  bool get_duration(const YAML::Node& map, const std::string& path, const char* key, Millis& out);
  bool get_size(const YAML::Node& map, const std::string& path, const char* key,
                std::uint64_t& out);
  template <typename Int>
  bool get_uint(const YAML::Node& map, const std::string& path, const char* key, Int& out,
                std::uint64_t max);
  bool get_list(const YAML::Node& map, const std::string& path, const char* key,
                std::vector<std::string>& out);
  bool get_map(const YAML::Node& map, const std::string& path, const char* key, StringMap& out);

  // A scalar as a string with substitutions applied; nullopt (and a problem) otherwise.
  std::optional<std::string> scalar(const YAML::Node& node, const std::string& key);

  static std::string join(const std::string& path, std::string_view key);
  // Every file a ${file:} reference read, in order (what a watcher must follow).
  const std::vector<std::filesystem::path>& files_read() const { return files_read_; }
  // `value` quoted for a message, or, when it came from a reference, the reference's name.
  std::string shown(const YAML::Node& node, const std::string& value) const;

 private:
  bool get_uint64(const YAML::Node& map, const std::string& path, const char* key,
                  std::uint64_t& out, std::uint64_t max);

  std::filesystem::path file_;
  std::string name_;
  Problems& problems_;
  bool references_;
  std::vector<std::filesystem::path> files_read_;
};

template <typename Int>
bool YamlReader::get_uint(const YAML::Node& map, const std::string& path, const char* key, Int& out,
                          std::uint64_t max) {
  std::uint64_t value = 0;
  if (!get_uint64(map, path, key, value, max)) return false;
  out = static_cast<Int>(value);
  return true;
}

}  // namespace gw
