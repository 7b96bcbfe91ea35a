#include "gateway/proxy/response_rules.hpp"

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

}  // namespace gw
