#include "gateway/proxy/response_rules.hpp"

#include <charconv>

#include "gateway/proxy/request_rules.hpp"

namespace gw {

bool reusable_after(const AnswerEnd& end) {
  if (!end.keep_alive || end.bytes_left) return false;
  bool bodiless = end.head_request || end.status == 204 || end.status == 304;
  if (!bodiless) return true;
  bool announces_body =
      !end.transfer_encoding.empty() || (!end.content_length.empty() && end.content_length != "0");
  return !announces_body;
}

std::string_view answer_head_problem(unsigned status, std::size_t transfer_encodings,
                                     std::string_view transfer_encoding) {
  if (status == 101) return "the vendor switched protocols (101) unasked";
  if (transfer_encodings > 1) return "more than one Transfer-Encoding header";
  if (transfer_encodings == 1) {
    auto te = transfer_encoding;
    while (!te.empty() && (te.front() == ' ' || te.front() == '\t')) te.remove_prefix(1);
    while (!te.empty() && (te.back() == ' ' || te.back() == '\t')) te.remove_suffix(1);
    bool chunked = te.size() == 7;
    for (std::size_t i = 0; chunked && i < 7; ++i) chunked = (te[i] | 0x20) == "chunked"[i];
    if (!chunked) return "a transfer coding other than chunked";
  }
  return {};
}

namespace {

bool istarts_with(std::string_view s, std::string_view lower_prefix) {
  if (s.size() < lower_prefix.size()) return false;
  for (std::size_t i = 0; i < lower_prefix.size(); ++i)
    if ((s[i] | 0x20) != lower_prefix[i]) return false;
  return true;
}

void append_redacted(std::string& out, std::string_view value,
                     const std::vector<std::string>& secrets) {
  if (!needs_redaction(value, secrets)) {
    out += value;
    return;
  }
  std::string copy(value);
  redact(copy, secrets);
  out += copy;
}

}  // namespace

void write_response_head(std::string& h, const RelayParser& rp, std::string_view request_id,
                         const std::vector<std::string>& secrets, const ResponseFraming& framing) {
  namespace http = boost::beast::http;
  h.clear();
  h += "HTTP/1.1 ";
  unsigned status = rp.status();
  h += static_cast<char>('0' + status / 100 % 10);
  h += static_cast<char>('0' + status / 10 % 10);
  h += static_cast<char>('0' + status % 10);
  h += ' ';
  append_redacted(h, rp.reason(), secrets);
  h += "\r\n";
  auto tokens = connection_tokens(rp[http::field::connection]);
  for (const auto& f : rp.fields()) {
    if (f.name == http::field::content_length || f.name == http::field::transfer_encoding) continue;
    auto n = rp.name(f);
    if (is_hop_by_hop(n, tokens) || istarts_with(n, "x-request-id") ||
        istarts_with(n, "x-gateway-"))
      continue;
    h += n;
    h += ": ";
    append_redacted(h, rp.value(f), secrets);
    h += "\r\n";
  }
  h += "X-Request-Id: ";
  h += request_id;
  h += "\r\n";
  if (framing.chunked) {
    h += "Transfer-Encoding: chunked\r\n";
  } else if (framing.length) {
    h += "Content-Length: ";
    char digits[24];
    auto end = std::to_chars(digits, digits + sizeof digits, *framing.length).ptr;
    h.append(digits, end);
    h += "\r\n";
  }
  if (!framing.keep_alive) h += "Connection: close\r\n";
  h += "\r\n";
}

}  // namespace gw
