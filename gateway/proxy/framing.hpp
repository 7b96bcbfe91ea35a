// How a caller's request is framed, checked before it is relayed: the forms a proxy must
// refuse because whoever parses the message next could read its end elsewhere (request
// smuggling). Plain values in, so unit tests reach them without a parser or a socket.
#pragma once
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <string>
#include <string_view>

namespace gw {

// Bare LF line ends (bad_line_ending) and obs-fold continuation lines (bad_field) in a raw
// request head, up to and including its last field's CRLF; no error when there are none.
// Beast unfolds obs-fold lines silently, which a proxy must refuse (RFC 9112 5.2).
boost::system::error_code raw_head_problem(std::string_view head);

// Request smuggling forms the parser lets through: more than one Content-Length or one
// that is not plain digits ("5, 5"); a Transfer-Encoding other than exactly "chunked"
// (RFC 9112 6.3: chunked must be final, and we apply no other coding), or next to a
// Content-Length. Takes how many of each header the request has and the first one's value;
// returns why the framing is refused, empty when it is not.
std::string framing_problem(std::size_t transfer_encodings, std::string_view transfer_encoding,
                            std::size_t content_lengths, std::string_view content_length);

}  // namespace gw
