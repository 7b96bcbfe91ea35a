#include "gateway/proxy/request_rules.hpp"

#include <boost/url/encode.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/rfc/pchars.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>
#include <boost/url/url.hpp>

#include <algorithm>
#include <cctype>

namespace gw {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

int hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decodes; nullopt on a malformed escape.
std::optional<std::string> pct_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size() || hex(s[i + 1]) < 0 || hex(s[i + 2]) < 0) return std::nullopt;
    out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
    i += 2;
  }
  return out;
}

bool dot_segment(std::string_view decoded) {
  // A decoded segment may itself hold '/' or '\' (from %2f, %5c): check every piece.
  std::size_t start = 0;
  while (true) {
    auto end = decoded.find_first_of("/\\", start);
    auto piece = decoded.substr(start, end == std::string_view::npos ? end : end - start);
    if (piece == "." || piece == "..") return true;
    if (end == std::string_view::npos) return false;
    start = end + 1;
  }
}

}  // namespace

std::optional<SplitTarget> split_target(std::string_view target, std::string* why) {
  auto fail = [&](const char* text) -> std::optional<SplitTarget> {
    if (why) *why = text;
    return std::nullopt;
  };
  if (target.empty() || target[0] != '/')
    return fail("the request target must be a path (origin-form)");
  if (target.size() > 1 && target[1] == '/')
    return fail("the request target must not start with //");
  for (char c : target)
    if (c == '\0' || c == '\r' || c == '\n') return fail("the request target holds NUL, CR or LF");
  auto qpos = target.find('?');
  std::string_view path = target.substr(0, qpos);
  // Without a '%' the decoded form is the raw one (checked above): no copies to make.
  bool escaped = target.find('%') != std::string_view::npos;
  if (escaped) {
    auto decoded_all = pct_decode(target);
    if (!decoded_all) return fail("the request target has a malformed percent-escape");
    for (char c : *decoded_all)
      if (c == '\0' || c == '\r' || c == '\n')
        return fail("the request target holds NUL, CR or LF");
  }
  if (path.find('#') != std::string_view::npos) return fail("the request target holds a fragment");

  if (path.find('\\') != std::string_view::npos) return fail("the request path holds a backslash");
  // Check every segment, decoded, for '.' and '..' (also with ';' parameters, "..;x", which
  // some servers strip), an empty one ("//", which some servers read as a host), and an
  // encoded '/' or '\' (one segment to the allow list, several to the vendor).
  std::size_t pos = 1;
  while (pos <= path.size()) {
    auto end = path.find('/', pos);
    auto seg = path.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
    if (seg.empty() && end != std::string_view::npos)
      return fail("the request path holds an empty segment (//)");
    std::optional<std::string> decoded;
    if (escaped) {
      decoded = pct_decode(seg);
      if (!decoded) return fail("the request path has a malformed percent-escape");
      if (decoded->find_first_of("/\\") != std::string::npos)
        return fail("the request path holds a percent-encoded '/' or '\\'");
      seg = *decoded;
    }
    if (dot_segment(seg.substr(0, seg.find(';'))))
      return fail("the request path holds a '.' or '..' segment");
    if (end == std::string_view::npos) break;
    pos = end + 1;
  }

  SplitTarget out;
  auto first_end = path.find('/', 1);
  out.integration = std::string(
      path.substr(1, first_end == std::string_view::npos ? std::string_view::npos : first_end - 1));
  out.path = first_end == std::string_view::npos ? "/" : std::string(path.substr(first_end));
  if (qpos != std::string_view::npos) {
    out.has_query = true;
    out.query = std::string(target.substr(qpos + 1));
  }
  if (out.integration.empty()) return fail("the request path names no integration");
  return out;
}

std::vector<std::string> connection_tokens(std::string_view header) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos < header.size()) {
    auto end = header.find(',', pos);
    if (end == std::string_view::npos) end = header.size();
    auto token = header.substr(pos, end - pos);
    while (!token.empty() && (token.front() == ' ' || token.front() == '\t'))
      token.remove_prefix(1);
    while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
    if (!token.empty()) out.emplace_back(token);
    pos = end + 1;
  }
  return out;
}

bool is_hop_by_hop(std::string_view name, const std::vector<std::string>& tokens) {
  static constexpr std::string_view fixed[] = {
      "connection",       "keep-alive",         "te",
      "trailer",          "transfer-encoding",  "upgrade",
      "proxy-connection", "proxy-authenticate", "proxy-authorization"};
  for (auto f : fixed)
    if (iequals(name, f)) return true;
  if (name.size() >= 6 && iequals(name.substr(0, 6), "proxy-")) return true;
  for (const auto& t : tokens)
    if (iequals(name, t)) return true;
  return false;
}

// One pass over the pattern keeping the set of path offsets it can have reached, so the cost
// is pattern length x path length however many stars the pattern holds (a backtracking
// matcher is exponential in them; the fuzzer found one taking seconds).
bool glob_match(std::string_view pattern, std::string_view path) {
  if (pattern.find('*') == std::string_view::npos) return pattern == path;
  const std::size_t n = path.size();
  thread_local std::vector<char> reach, next;
  reach.assign(n + 1, 0);
  next.resize(n + 1);
  reach[0] = 1;
  for (std::size_t p = 0; p < pattern.size(); ++p) {
    std::fill(next.begin(), next.end(), 0);
    if (pattern.compare(p, 2, "**") == 0) {  // any run of characters
      ++p;
      char any = 0;
      for (std::size_t i = 0; i <= n; ++i) next[i] = any = static_cast<char>(any | reach[i]);
    } else if (pattern[p] == '*') {  // any run without a '/'
      char run = 0;
      for (std::size_t i = 0; i <= n; ++i) {
        run = static_cast<char>(run | reach[i]);
        next[i] = run;
        if (i < n && path[i] == '/') run = 0;
      }
    } else {
      for (std::size_t i = 0; i < n; ++i) next[i + 1] = reach[i] && path[i] == pattern[p];
    }
    reach.swap(next);
  }
  return reach[n] != 0;
}

bool allowed(const std::vector<AllowRule>& rules, std::string_view method, std::string_view path) {
  for (const auto& rule : rules) {
    bool method_ok = rule.methods.empty() ||
                     std::any_of(rule.methods.begin(), rule.methods.end(),
                                 [&](const std::string& m) { return iequals(m, method); });
    if (!method_ok) continue;
    if (rule.paths.empty()) return true;
    for (const auto& p : rule.paths)
      if (glob_match(p, path)) return true;
  }
  return false;
}

namespace {

bool escape_at(std::string_view s, std::size_t i) {
  return s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0;
}

// Appends a caller's query segment, its valid escapes kept, every character a query may not
// hold raw (space, '#', a stray '%', controls, non-ASCII) percent-encoded.
void append_query_segment(std::string& out, std::string_view seg) {
  static constexpr auto allowed = boost::urls::pchars + boost::urls::grammar::lut_chars("/?");
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (std::size_t i = 0; i < seg.size(); ++i) {
    auto c = static_cast<unsigned char>(seg[i]);
    if (escape_at(seg, i)) {
      out.append(seg.substr(i, 3));
      i += 2;
    } else if (c != '%' && allowed(static_cast<char>(c))) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
}

}  // namespace

std::string rewrite_query(std::string_view query, std::string_view name, std::string_view value) {
  // By hand rather than with Boost.URL's params().erase, which (1.81) leaves a parameter in
  // place when its value holds a raw '=' ("access_token=a=b"): fuzz_query found that.
  std::string out;
  std::size_t pos = 0;
  while (pos <= query.size() && !query.empty()) {
    auto amp = query.find('&', pos);
    auto seg =
        query.substr(pos, amp == std::string_view::npos ? std::string_view::npos : amp - pos);
    auto key = seg.substr(0, seg.find('='));
    if (pct_decode(key).value_or(std::string(key)) != name) {
      if (!out.empty()) out += '&';
      append_query_segment(out, seg);
    }
    if (amp == std::string_view::npos) break;
    pos = amp + 1;
  }
  if (!out.empty()) out += '&';
  out.append(name);
  out += '=';
  // Unreserved characters only: a '+' left as is would reach most vendors as a space, so a
  // base64 token ("ab+c/d=") must travel as ab%2Bc%2Fd%3D.
  auto encoded = boost::urls::encode(boost::core::string_view(value.data(), value.size()),
                                     boost::urls::unreserved_chars);
  out.append(encoded.data(), encoded.size());
  return out;
}

namespace {

// Length of the text at `at` that spells `secret`, each character raw or percent-encoded
// (either hex case, as a URL echoed by a vendor may carry it), a space also as '+'; 0 when
// it does not.
std::size_t spelled_at(std::string_view text, std::size_t at, std::string_view secret) {
  std::size_t k = at;
  for (char want : secret) {
    if (k >= text.size()) return 0;
    if (text[k] == want) {
      ++k;
    } else if (text[k] == '%' && k + 2 < text.size() && hex(text[k + 1]) >= 0 &&
               hex(text[k + 2]) >= 0 &&
               static_cast<char>(hex(text[k + 1]) * 16 + hex(text[k + 2])) == want) {
      k += 3;
    } else if (text[k] == '+' && want == ' ') {
      ++k;
    } else {
      return 0;
    }
  }
  return k - at;
}

}  // namespace

bool redact(std::string& text, const std::vector<std::string>& secrets) {
  bool any = false;
  for (const auto& s : secrets) {
    if (s.empty()) continue;
    // No raw occurrence and no escape at all: nothing can spell the secret.
    if (text.find(s) == std::string::npos && text.find_first_of("%+") == std::string::npos)
      continue;
    std::string out;
    std::size_t copied = 0;
    for (std::size_t i = 0; i < text.size();) {
      if (auto n = spelled_at(text, i, s)) {
        out.append(text, copied, i - copied);
        out += "REDACTED";
        i += n;
        copied = i;
        any = true;
      } else {
        ++i;
      }
    }
    if (copied) {
      out.append(text, copied, std::string::npos);
      text = std::move(out);
    }
  }
  return any;
}

bool needs_redaction(std::string_view text, const std::vector<std::string>& secrets) {
  for (const auto& s : secrets) {
    if (s.empty()) continue;
    if (text.find(s) != std::string_view::npos) return true;
    if (text.find_first_of("%+") == std::string_view::npos) continue;
    for (std::size_t i = 0; i < text.size(); ++i)
      if (spelled_at(text, i, s)) return true;
  }
  return false;
}

std::string redact_query_params(std::string_view target, const std::vector<std::string>& names) {
  auto q = target.find('?');
  if (q == std::string_view::npos || names.empty()) return std::string(target);
  std::string out(target.substr(0, q + 1));
  auto query = target.substr(q + 1);
  std::size_t pos = 0;
  bool first = true;
  while (pos <= query.size()) {
    auto end = query.find('&', pos);
    auto pair =
        query.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
    auto eq = pair.find('=');
    auto raw_name = pair.substr(0, eq);
    auto name = pct_decode(raw_name).value_or(std::string(raw_name));
    if (!first) out += '&';
    first = false;
    if (eq != std::string_view::npos &&
        std::find(names.begin(), names.end(), name) != names.end()) {
      out.append(raw_name);
      out += "=REDACTED";
    } else {
      out.append(pair);
    }
    if (end == std::string_view::npos) break;
    pos = end + 1;
  }
  return out;
}

bool is_idempotent(std::string_view m) {
  return m == "GET" || m == "HEAD" || m == "OPTIONS" || m == "PUT" || m == "DELETE" || m == "TRACE";
}

}  // namespace gw
