#include "gateway/proxy/framing.hpp"

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>

namespace gw {

namespace http = boost::beast::http;

boost::system::error_code raw_head_problem(std::string_view head) {
  for (auto i = head.find('\n'); i != std::string_view::npos; i = head.find('\n', i + 1)) {
    if (i == 0 || head[i - 1] != '\r') return http::error::bad_line_ending;
    if (i + 1 < head.size() && (head[i + 1] == ' ' || head[i + 1] == '\t'))
      return http::error::bad_field;
  }
  return {};
}

std::string framing_problem(std::size_t transfer_encodings, std::string_view transfer_encoding,
                            std::size_t content_lengths, std::string_view content_length) {
  auto te = transfer_encodings;
  auto cl = content_lengths;
  if (te) {
    if (cl) return "both Content-Length and Transfer-Encoding";
    if (te > 1) return "more than one Transfer-Encoding header";
    if (!boost::beast::iequals(transfer_encoding, "chunked"))
      return "Transfer-Encoding other than chunked";
  }
  if (!cl) return {};
  if (cl > 1) return "more than one Content-Length header";
  auto v = content_length;
  if (v.empty() || v.find_first_not_of("0123456789") != std::string_view::npos)
    return "Content-Length is not a number";
  return {};
}

}  // namespace gw
