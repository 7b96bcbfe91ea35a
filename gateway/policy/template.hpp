// {placeholder} templates used by policies ("Bearer {access_token}",
// "https://{subdomain}.zendesk.com"). Compiled once at load, rendered per connection.
// Pure: standard library only.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gw {

class Template {
 public:
  struct Piece {
    bool placeholder = false;
    std::string text;      // literal text, or the placeholder's name
    bool in_host = false;  // the placeholder stands in a URL's authority
  };

  Template() = default;
  // Returns nullopt and sets `error` for an unbalanced brace or an empty/invalid name.
  static std::optional<Template> compile(std::string_view source, std::string* error);

  // Resolves a placeholder name to its value, or nullopt when it has none.
  using Lookup = std::function<std::optional<std::string>(std::string_view name)>;
  // Nullopt when a placeholder has no value; `missing` then names it.
  std::optional<std::string> render(const Lookup& lookup, std::string* missing = nullptr) const;

  const std::string& source() const { return source_; }
  const std::vector<Piece>& pieces() const { return pieces_; }
  bool empty() const { return source_.empty(); }
  bool uses(std::string_view name) const;
  std::vector<std::string> host_placeholders() const;

 private:
  std::string source_;
  std::vector<Piece> pieces_;
};

}  // namespace gw
