#include "gateway/config/yaml_reader.hpp"

#include <charconv>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace gw {

YamlReader::YamlReader(std::filesystem::path file, Problems& problems, bool references)
    : file_(std::move(file)),
      name_(file_.filename().string()),
      problems_(problems),
      references_(references) {}

std::string YamlReader::shown(const YAML::Node& node, const std::string& value) const {
  // A value that came from ${env:} or ${file:} may be a secret: name the reference instead.
  if (node.IsScalar() && node.Scalar().find("${") != std::string::npos)
    return "the value of " + node.Scalar();
  return "\"" + value + "\"";
}

std::optional<YAML::Node> YamlReader::load() {
  try {
    std::ifstream in(file_);
    if (!in) {
      problems_.add(name_, 0, "", "cannot open " + file_.string());
      return std::nullopt;
    }
    return YAML::Load(in);
  } catch (const YAML::Exception& e) {
    problems_.add(name_, e.mark.line + 1, "", "invalid YAML: " + e.msg);
    return std::nullopt;
  }
}

std::string YamlReader::where(const YAML::Node& node) const {
  return name_ + ":" + std::to_string(node.Mark().line + 1);
}

void YamlReader::problem(const YAML::Node& node, const std::string& key, const std::string& what) {
  problems_.add(name_, node.Mark().line + 1, key, what);
}

std::optional<std::string> YamlReader::key_name(const YAML::Node& key, const std::string& path) {
  if (!key.IsScalar()) {
    problem(key, path, "keys must be plain names");
    return std::nullopt;
  }
  return key.Scalar();
}

std::string YamlReader::join(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

bool YamlReader::check_keys(const YAML::Node& map, const std::string& path,
                            std::initializer_list<std::string_view> allowed) {
  if (!map.IsMap()) {
    problem(map, path, "must be a mapping");
    return false;
  }
  for (const auto& item : map) {
    auto name = key_name(item.first, path);
    if (!name) continue;
    const std::string& key = *name;
    bool known = false;
    for (auto a : allowed) known = known || a == key;
    if (!known) problem(item.first, join(path, key), "unknown key");
  }
  return true;
}

std::optional<std::string> YamlReader::scalar(const YAML::Node& node, const std::string& key) {
  if (!node.IsScalar()) {
    problem(node, key, "must be a single value");
    return std::nullopt;
  }
  const std::string& raw = node.Scalar();
  std::string out;
  std::size_t pos = 0;
  while (true) {
    auto start = raw.find("${", pos);
    if (start == std::string::npos) break;
    auto end = raw.find('}', start);
    if (end == std::string::npos) break;
    out.append(raw, pos, start - pos);
    std::string ref = raw.substr(start + 2, end - start - 2);
    if (!references_) {
      // A policy is data from whoever wrote it: it must not be able to read the store key.
      problem(node, key, "${" + ref + "}: a policy file expands no ${env:} or ${file:} reference");
      return std::nullopt;
    }
    if (ref.rfind("env:", 0) == 0) {
      std::string name = ref.substr(4);
      const char* value = std::getenv(name.c_str());
      if (!value) {
        problem(node, key, "environment variable " + name + " is not set");
        return std::nullopt;
      }
      out += value;
    } else if (ref.rfind("file:", 0) == 0) {
      std::filesystem::path p = ref.substr(5);
      if (p.is_relative()) p = file_.parent_path() / p;
      files_read_.push_back(p);
      std::ifstream in(p, std::ios::binary);
      if (!in) {
        problem(node, key, "cannot read file " + p.string());
        return std::nullopt;
      }
      std::stringstream ss;
      ss << in.rdbuf();
      std::string content = ss.str();
      while (!content.empty() && (content.back() == '\n' || content.back() == '\r'))
        content.pop_back();
      out += content;
    } else {
      problem(node, key, "unknown reference ${" + ref + "} (use ${env:NAME} or ${file:PATH})");
      return std::nullopt;
    }
    pos = end + 1;
  }
  out.append(raw, pos);
  return out;
}

bool YamlReader::get(const YAML::Node& map, const std::string& path, const char* key,
                     std::string& out) {
  auto node = map[key];
  if (!node) return false;
  if (node.IsNull()) return false;
  auto value = scalar(node, join(path, key));
  if (!value) return false;
  out = *value;
  return true;
}

bool YamlReader::get(const YAML::Node& map, const std::string& path, const char* key, bool& out) {
  std::string text;
  if (!get(map, path, key, text)) return false;
  if (text == "true")
    out = true;
  else if (text == "false")
    out = false;
  else {
    problem(map[key], join(path, key), "must be true or false, not " + shown(map[key], text));
    return false;
  }
  return true;
}

bool YamlReader::get_duration(const YAML::Node& map, const std::string& path, const char* key,
                              Millis& out) {
  std::string text;
  if (!get(map, path, key, text)) return false;
  auto d = parse_duration(text);
  if (!d) {
    problem(map[key], join(path, key),
            shown(map[key], text) +
                " is not a duration (a number with ms, s, m, h or d, at most 3650d)");
    return false;
  }
  out = *d;
  return true;
}

bool YamlReader::get_size(const YAML::Node& map, const std::string& path, const char* key,
                          std::uint64_t& out) {
  std::string text;
  if (!get(map, path, key, text)) return false;
  auto s = parse_size(text);
  if (!s) {
    problem(map[key], join(path, key),
            shown(map[key], text) + " is not a size (e.g. 16384, 64KiB, 10MiB)");
    return false;
  }
  out = *s;
  return true;
}

bool YamlReader::get_uint64(const YAML::Node& map, const std::string& path, const char* key,
                            std::uint64_t& out, std::uint64_t max) {
  std::string text;
  if (!get(map, path, key, text)) return false;
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || value > max) {
    problem(map[key], join(path, key),
            shown(map[key], text) + " is not a whole number from 0 to " + std::to_string(max));
    return false;
  }
  out = value;
  return true;
}

bool YamlReader::get_list(const YAML::Node& map, const std::string& path, const char* key,
                          std::vector<std::string>& out) {
  auto node = map[key];
  if (!node || node.IsNull()) return false;
  std::string k = join(path, key);
  if (!node.IsSequence()) {
    problem(node, k, "must be a list");
    return false;
  }
  out.clear();
  for (std::size_t i = 0; i < node.size(); ++i) {
    auto value = scalar(node[i], k + "[" + std::to_string(i) + "]");
    if (value) out.push_back(*value);
  }
  return true;
}

bool YamlReader::get_map(const YAML::Node& map, const std::string& path, const char* key,
                         StringMap& out) {
  auto node = map[key];
  if (!node || node.IsNull()) return false;
  std::string k = join(path, key);
  if (!node.IsMap()) {
    problem(node, k, "must be a mapping");
    return false;
  }
  for (const auto& item : node) {
    auto name = key_name(item.first, k);
    if (!name) continue;
    auto value = scalar(item.second, join(k, *name));
    if (value) out[*name] = *value;
  }
  return true;
}

}  // namespace gw
