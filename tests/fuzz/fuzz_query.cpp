// libFuzzer target: query credential rewriting and redaction. After rewrite_query the query
// carries the credential exactly once, with its exact value, whatever the caller sent, and
// decodes to that value whether or not the vendor reads '+' as a space.
#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>

#include <cstdint>
#include <string>

#include "gateway/proxy/request_rules.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  auto cut = input.find('\x01');
  std::string_view query = input.substr(0, cut);
  std::string value =
      cut == std::string_view::npos ? "s3cret+/=&%" : std::string(input.substr(cut + 1));
  std::string out = gw::rewrite_query(query, "access_token", value);
  const std::string target = "/x?" + out;
  auto url = boost::urls::parse_relative_ref(target);
  if (!url) __builtin_trap();
  int found = 0;
  for (auto p : url->params()) {
    if (p.key == "access_token") {
      ++found;
      if (!p.has_value || p.value != value) __builtin_trap();
    }
  }
  if (found != 1) __builtin_trap();
  // Redaction leaves no access_token parameter with a value but REDACTED.
  auto red = gw::redact_query_params(target, {"access_token"});
  auto red_url = boost::urls::parse_relative_ref(red);
  if (!red_url) __builtin_trap();
  for (auto p : red_url->params())
    if (p.key == "access_token" && p.value != "REDACTED") __builtin_trap();
  return 0;
}
