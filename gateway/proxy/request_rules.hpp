// Pure request rules of the proxy listener (SPEC section 5): target validation and
// routing split, hop-by-hop header names, allow-list globs, query credential rewriting and
// redaction. Standard library and Boost.URL only, so unit tests reach them without sockets.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/config/config.hpp"

namespace gw {

struct SplitTarget {
  std::string integration;  // first path segment
  std::string path;         // the rest, starting with '/', "/" when empty
  std::string query;        // without '?', may be empty
  bool has_query = false;
};

// Validates an origin-form request target and splits it. Nullopt with `why` set for
// absolute-form and asterisk-form targets, '.' or '..' segments (percent-encoded too),
// NUL/CR/LF raw or percent-encoded, and a missing integration segment.
std::optional<SplitTarget> split_target(std::string_view target, std::string* why);

// True for the connection-level headers a proxy must not forward (RFC 9110 7.6.1), plus
// the names listed in the message's Connection header (`connection_tokens`).
bool is_hop_by_hop(std::string_view name, const std::vector<std::string>& connection_tokens);
std::vector<std::string> connection_tokens(std::string_view connection_header);

// '*' matches within one path segment, '**' across segments.
bool glob_match(std::string_view pattern, std::string_view path);
bool allowed(const std::vector<AllowRule>& rules, std::string_view method, std::string_view path);

// Removes every `name` parameter from `query` (compared after decoding) and appends
// name=value, percent-encoded. Returns the new query without '?'.
std::string rewrite_query(std::string_view query, std::string_view name, std::string_view value);

// Replaces every occurrence of each secret in `text` by "REDACTED", however a URL may spell
// it (each character raw or percent-encoded in either hex case, a space also as '+'); returns
// whether any was. needs_redaction says whether redact would change `text`.
bool redact(std::string& text, const std::vector<std::string>& secrets);
bool needs_redaction(std::string_view text, const std::vector<std::string>& secrets);

// Replaces the values of query parameters named in `names` by REDACTED in a path+query.
std::string redact_query_params(std::string_view target, const std::vector<std::string>& names);

bool is_idempotent(std::string_view method);

}  // namespace gw
