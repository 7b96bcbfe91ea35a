// The request as the vendor gets it: its head written by hand into a buffer the caller's
// connection keeps (no allocation once warm), and its body framed piece by piece. Plain
// values in, so unit tests reach them without a socket.
#pragma once
#include <boost/asio/buffer.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "gateway/auth/credential.hpp"
#include "gateway/config/url.hpp"
#include "gateway/proxy/indexed_parser.hpp"
#include "gateway/proxy/request_rules.hpp"

namespace gw {

// Writes the upstream request head into `out` (cleared first): the request line (the
// upstream's base path, the caller's path, the query with a query credential put in by
// rewrite_query), the caller's fields minus what must not travel (hop-by-hop ones and those
// its Connection names, X-Gateway-*, Authorization, Host, Expect, Content-Length,
// X-Request-Id, a field of the injected header's name), then Host, X-Request-Id:
// `request_id` and a header credential. Returns where the fields end: framing and the blank
// line that ends the head are added as it is sent (set_framing).
std::size_t upstream_head(std::string& out, const CallerParser& req, const UpstreamTarget& upstream,
                          const SplitTarget& split, const Credential& cred,
                          std::string_view request_id);

// Ends the head in `head` (its fields ending at `fields_end`, as upstream_head returned)
// with its framing: chunked, a length (also an explicit 0), or none. Returns `head`; it may
// be ended again, differently, for a replay.
const std::string& set_framing(std::string& head, std::size_t fields_end, bool chunked,
                               std::optional<std::uint64_t> length);

// Fills out[1..3] with one piece of a body: `got` bytes of `data`, framed as a chunk when
// `chunked` (with the last chunk when `last`); out[0] is left for a head. A chunk's size
// line is written into `size_line`, which must live until the buffers are written.
void frame_piece(std::array<boost::asio::const_buffer, 4>& out, const char* data, std::size_t got,
                 bool chunked, bool last, char (&size_line)[24]);

}  // namespace gw
