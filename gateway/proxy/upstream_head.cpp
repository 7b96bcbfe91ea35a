#include "gateway/proxy/upstream_head.hpp"

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/field.hpp>

#include <cctype>
#include <charconv>

namespace gw {

namespace http = boost::beast::http;

namespace {

bool istarts_with(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
  return true;
}

}  // namespace

std::size_t upstream_head(std::string& out, const CallerParser& req, const UpstreamTarget& upstream,
                          const SplitTarget& split, const Credential& cred,
                          std::string_view request_id) {
  std::string& h = out;
  h.clear();
  auto method = req.method_string();
  h.append(method.data(), method.size());
  h += ' ';
  h += upstream.base_path;
  h += split.path;
  if (cred.kind == InjectKind::query) {
    h += '?';
    h += rewrite_query(split.query, cred.name, cred.value);
  } else if (split.has_query) {
    h += '?';
    h += split.query;
  }
  h += " HTTP/1.1\r\n";
  bool header_cred = cred.kind != InjectKind::query;
  auto tokens = connection_tokens(req[http::field::connection]);
  for (const auto& f : req.fields()) {
    auto n = req.name(f);
    if (is_hop_by_hop(n, tokens) || istarts_with(n, "x-gateway-")) continue;
    switch (f.name) {
      case http::field::authorization:
      case http::field::host:
      case http::field::expect:
      case http::field::content_length:
        continue;
      default:
        break;
    }
    if (istarts_with(n, "x-request-id") || (header_cred && boost::beast::iequals(n, cred.name)))
      continue;
    h += n;
    h += ": ";
    h += req.value(f);
    h += "\r\n";
  }
  h += "Host: ";
  h += upstream.host_header;
  h += "\r\nX-Request-Id: ";
  h += request_id;
  h += "\r\n";
  if (header_cred) {
    h += cred.name;
    h += ": ";
    h += cred.value;
    h += "\r\n";
  }
  return h.size();
}

const std::string& set_framing(std::string& head, std::size_t fields_end, bool chunked,
                               std::optional<std::uint64_t> length) {
  std::string& h = head;
  h.resize(fields_end);
  if (chunked) {
    h += "Transfer-Encoding: chunked\r\n";
  } else if (length) {
    h += "Content-Length: ";
    h += std::to_string(*length);
    h += "\r\n";
  }
  h += "\r\n";
  return h;
}

void frame_piece(std::array<boost::asio::const_buffer, 4>& out, const char* data, std::size_t got,
                 bool chunked, bool last, char (&size_line)[24]) {
  if (chunked && got) {
    auto [end, ec] = std::to_chars(size_line, size_line + sizeof size_line - 2, got, 16);
    end[0] = '\r';
    end[1] = '\n';
    out[1] = boost::asio::buffer(size_line, static_cast<std::size_t>(end + 2 - size_line));
  }
  if (got) out[2] = boost::asio::buffer(data, got);
  if (chunked) {
    std::string_view tail = got && last ? "\r\n0\r\n\r\n" : got ? "\r\n" : last ? "0\r\n\r\n" : "";
    out[3] = boost::asio::buffer(tail.data(), tail.size());
  }
}

}  // namespace gw
