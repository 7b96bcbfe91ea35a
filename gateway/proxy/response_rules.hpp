// Pure rules for the vendor's answer (SPEC section 5): what it may carry back to the caller,
// and whether the connection it came on may serve another caller. Standard library only, so
// unit tests and fuzzers reach them without sockets.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/proxy/indexed_parser.hpp"

namespace gw {

// What the relay knows of an answer once its last byte was read.
struct AnswerEnd {
  bool head_request = false;           // the request was HEAD: the answer has no body
  unsigned status = 0;                 // the final status
  std::string_view content_length;     // the answer's Content-Length value, empty when absent
  std::string_view transfer_encoding;  // likewise
  bool keep_alive = false;             // the vendor did not ask to close
  bool bytes_left = false;             // bytes past the answer's end were already received
};

// Whether the vendor connection may go back to the pool. Never when anything came after the
// answer (those bytes would be the next caller's answer: the worst thing a shared gateway can
// do), nor after an answer that has no body but announced one (HEAD with a non-zero length,
// 204 or 304 with body framing): a vendor that sends that body anyway, even a moment later,
// would put it on the connection as if it were the next answer.
bool reusable_after(const AnswerEnd& end);

// Why an answer's head cannot be relayed, empty when it can: a 101 (we never ask to upgrade:
// the caller's Upgrade is hop-by-hop), or a transfer coding other than exactly chunked (we
// send no TE, so a vendor must not apply one; relayed re-chunked, a gzip coding would be lost).
std::string_view answer_head_problem(unsigned status, std::size_t transfer_encodings,
                                     std::string_view transfer_encoding);

// How the gateway frames the answer it writes: exactly one of chunked, a length, or none
// (a bodiless answer without one), and whether the caller's connection stays open.
struct ResponseFraming {
  bool chunked = false;
  std::optional<std::uint64_t> length;
  bool keep_alive = true;
};

// Writes the caller's response head into `out` (cleared first): the vendor's status and
// fields minus hop-by-hop ones, its framing and any X-Gateway-* or X-Request-Id (the caller
// must be able to tell our errors from the vendor's), every value with `secrets` redacted
// however a URL spells them (a Location carrying the credential back), then our request id
// and our own framing.
void write_response_head(std::string& out, const RelayParser& answer, std::string_view request_id,
                         const std::vector<std::string>& secrets, const ResponseFraming& framing);

}  // namespace gw
