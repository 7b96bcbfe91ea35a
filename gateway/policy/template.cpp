#include "gateway/policy/template.hpp"

namespace gw {
namespace {

bool valid_name(std::string_view name) {
  if (name.empty()) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return false;
  return true;
}

}  // namespace

std::optional<Template> Template::compile(std::string_view source, std::string* error) {
  Template t;
  t.source_ = std::string(source);
  // The authority of an absolute URL runs from "://" to the next '/', '?' or '#'.
  std::size_t host_begin = std::string_view::npos, host_end = std::string_view::npos;
  if (auto scheme = source.find("://"); scheme != std::string_view::npos) {
    host_begin = scheme + 3;
    host_end = source.find_first_of("/?#", host_begin);
    if (host_end == std::string_view::npos) host_end = source.size();
  }
  std::string literal;
  for (std::size_t i = 0; i < source.size(); ++i) {
    char c = source[i];
    if (c == '}') {
      if (error) *error = "unbalanced '}' at offset " + std::to_string(i);
      return std::nullopt;
    }
    if (c != '{') {
      literal += c;
      continue;
    }
    auto close = source.find('}', i);
    auto name =
        close == std::string_view::npos ? std::string_view{} : source.substr(i + 1, close - i - 1);
    if (close == std::string_view::npos || !valid_name(name)) {
      if (error) *error = "bad placeholder at offset " + std::to_string(i);
      return std::nullopt;
    }
    if (!literal.empty()) t.pieces_.push_back({false, std::move(literal), false});
    literal.clear();
    // Without a literal "://" before it, a placeholder may supply the scheme and host
    // itself ("{instance_url}/services/data"): it counts as in the host.
    bool in_host = host_begin == std::string_view::npos || i < host_end;
    t.pieces_.push_back({true, std::string(name), in_host});
    i = close;
  }
  if (!literal.empty()) t.pieces_.push_back({false, std::move(literal), false});
  return t;
}

std::optional<std::string> Template::render(const Lookup& lookup, std::string* missing) const {
  std::string out;
  for (const auto& piece : pieces_) {
    if (!piece.placeholder) {
      out += piece.text;
      continue;
    }
    auto value = lookup(piece.text);
    if (!value) {
      if (missing) *missing = piece.text;
      return std::nullopt;
    }
    out += *value;
  }
  return out;
}

bool Template::uses(std::string_view name) const {
  for (const auto& piece : pieces_)
    if (piece.placeholder && piece.text == name) return true;
  return false;
}

std::vector<std::string> Template::host_placeholders() const {
  std::vector<std::string> names;
  for (const auto& piece : pieces_)
    if (piece.placeholder && piece.in_host) names.push_back(piece.text);
  return names;
}

}  // namespace gw
