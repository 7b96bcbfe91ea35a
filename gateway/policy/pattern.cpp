// Limits on a policy var's pattern, checked before std::regex compiles it.
#include <cctype>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/policy/policy.hpp"

namespace gw {

// libstdc++'s std::regex overflows a signed integer on a huge repeat count (undefined
// behaviour the fuzzer found), copies the repeated atom once per count (nested counts
// multiply) and recurses per character. A var pattern stays small: at most 256 characters,
// and the product of its {m,n} upper bounds (each + 1) at most 100,000.
std::string pattern_limits_problem(std::string_view p) {
  if (p.size() > 256) return "longer than 256 characters";
  double product = 1;
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (p[i] == '\\') {
      ++i;
      continue;
    }
    if (p[i] != '{') continue;
    std::size_t j = i + 1, bound = 0, digits = 0;
    for (; j < p.size() && (std::isdigit(static_cast<unsigned char>(p[j])) || p[j] == ','); ++j) {
      if (p[j] == ',') {
        bound = digits = 0;
        continue;
      }
      if (++digits > 6) return "a repeat count over 999,999";
      bound = bound * 10 + static_cast<std::size_t>(p[j] - '0');
    }
    if (j < p.size() && p[j] == '}' && j > i + 1) {
      product *= static_cast<double>(bound) + 1;
      if (product > 100000) return "repeat counts too large (their product is over 100,000)";
    }
  }
  // A repeated group that itself repeats or has alternatives, as in ^(a+)+$ or ^(a|a)*$,
  // backtracks exponentially on a value that almost matches.
  struct Group {
    bool inner_repeat = false;
  };
  std::vector<Group> open{{}};
  auto is_repeat = [&](std::size_t at) {
    return at < p.size() && (p[at] == '*' || p[at] == '+' || p[at] == '?' || p[at] == '{');
  };
  bool in_class = false;
  for (std::size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\') {
      if (!in_class && is_repeat(i + 2)) open.back().inner_repeat = true;
      ++i;
      continue;
    }
    if (in_class) {
      in_class = c != ']';
      if (!in_class && is_repeat(i + 1)) open.back().inner_repeat = true;
      continue;
    }
    if (c == '[') {
      in_class = true;
    } else if (c == '(') {
      open.push_back({});
    } else if (c == '|') {
      open.back().inner_repeat = true;
    } else if (c == ')' && open.size() > 1) {
      bool inner = open.back().inner_repeat;
      open.pop_back();
      if (is_repeat(i + 1)) {
        if (inner) return "a repeated group that repeats or has alternatives inside (exponential)";
        open.back().inner_repeat = true;
      } else if (inner) {
        open.back().inner_repeat = true;
      }
    } else if (is_repeat(i + 1) && c != '(' && c != '|') {
      open.back().inner_repeat = true;
    }
  }
  return {};
}

}  // namespace gw
