// libFuzzer target: a vendor's answer as bytes off the wire, split at arbitrary points, into
// the relay parser with a small body buffer. It must never write past the buffer, index a
// field outside its text, or take more bytes than it was given.
#include <boost/asio/buffer.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "gateway/proxy/indexed_parser.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  std::size_t step = 1 + data[0] % 64, room = 1 + data[1];
  std::string_view wire(reinterpret_cast<const char*>(data) + 2, size - 2);
  std::string text, pending;
  std::vector<gw::IndexedField> fields;
  gw::RelayParser p(text, fields);
  p.header_limit(4096);
  p.body_limit(boost::none);
  std::vector<char> buf(room);
  boost::system::error_code ec;
  std::size_t at = 0, body = 0;
  while (!p.is_done() && !ec) {
    if (at >= wire.size()) {
      if (pending.empty()) break;
    } else {
      pending.append(wire.substr(at, step));
      at += step;
    }
    std::size_t before = pending.size();
    for (int spins = 0; spins < 100000; ++spins) {
      if (pending.empty()) break;  // as the session: the parser is only given bytes
      p.body_buffer(buf.data(), buf.size());
      auto used = p.put(boost::asio::buffer(pending), ec);
      if (used > pending.size() || p.body_left() > room) __builtin_trap();
      pending.erase(0, used);
      body += room - p.body_left();
      if (ec == boost::beast::http::error::need_buffer) {
        ec = {};
        continue;
      }
      if (ec == boost::beast::http::error::need_more) ec = {};
      if (ec || used == 0 || p.is_done()) break;
    }
    if (at >= wire.size() && pending.size() == before) break;  // no progress, no more input
  }
  for (const auto& f : fields)
    if (std::size_t{f.name_at} + f.name_len > text.size() ||
        std::size_t{f.value_at} + f.value_len > text.size())
      __builtin_trap();
  if (body > wire.size()) __builtin_trap();
  return 0;
}
