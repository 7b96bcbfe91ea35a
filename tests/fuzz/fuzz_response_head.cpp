// libFuzzer target: the caller's response head written from a vendor's answer head. Input:
// one framing byte, the secret, a \x01, then the vendor's head. Whatever the vendor sent, the
// head we write parses again as HTTP with the same status, carries exactly our framing, no
// vendor framing, hop-by-hop or X-Gateway-* field, and no value that spells the secret.
#include <boost/asio/buffer.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "gateway/proxy/request_rules.hpp"
#include "gateway/proxy/response_rules.hpp"

namespace {

bool istarts(std::string_view s, std::string_view lower) {
  if (s.size() < lower.size()) return false;
  for (std::size_t i = 0; i < lower.size(); ++i)
    if ((s[i] | 0x20) != lower[i]) return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  std::uint8_t mode = data[0];
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  auto cut = input.find('\x01');
  if (cut == std::string_view::npos) return 0;
  std::string secret(input.substr(0, cut));
  std::string_view wire = input.substr(cut + 1);
  std::string text;
  std::vector<gw::IndexedField> fields;
  gw::RelayParser vendor(text, fields);
  vendor.header_limit(8192);
  vendor.eager(false);
  boost::system::error_code ec;
  vendor.put(boost::asio::buffer(wire.data(), wire.size()), ec);
  if (!vendor.is_header_done()) return 0;

  gw::ResponseFraming framing;
  framing.chunked = mode & 1;
  if (!framing.chunked && (mode & 2)) framing.length = mode;
  framing.keep_alive = mode & 4;
  std::vector<std::string> secrets;
  if (!secret.empty()) secrets.push_back(secret);
  std::string head;
  gw::write_response_head(head, vendor, "rid-1", secrets, framing);

  std::string text2;
  std::vector<gw::IndexedField> fields2;
  gw::RelayParser ours(text2, fields2);
  ours.eager(false);
  ours.header_limit(1 << 20);  // redacting a short secret can grow the head eightfold
  ours.put(boost::asio::buffer(head), ec);
  if (ec || !ours.is_header_done() || ours.status() != vendor.status()) __builtin_trap();
  // A secret can straddle our REDACTED marker only when it starts or ends with its letters.
  bool checkable = secret.size() >= 4 &&
                   std::string_view("REDACT").find(secret.front()) == std::string_view::npos &&
                   std::string_view("REDACT").find(secret.back()) == std::string_view::npos;
  int framing_fields = 0;
  for (const auto& f : ours.fields()) {
    auto n = ours.name(f);
    auto v = ours.value(f);
    if (istarts(n, "x-gateway-")) __builtin_trap();
    if (istarts(n, "x-request-id")) {
      if (v != "rid-1") __builtin_trap();
      continue;
    }
    if (f.name == boost::beast::http::field::transfer_encoding) {
      if (!framing.chunked || v != "chunked") __builtin_trap();
      ++framing_fields;
      continue;
    }
    if (f.name == boost::beast::http::field::content_length) {
      if (!framing.length || v != std::to_string(*framing.length)) __builtin_trap();
      ++framing_fields;
      continue;
    }
    if (f.name == boost::beast::http::field::connection) {
      if (framing.keep_alive || v != "close") __builtin_trap();
      continue;
    }
    if (gw::is_hop_by_hop(n, {})) __builtin_trap();
    if (checkable && gw::needs_redaction(v, secrets)) __builtin_trap();
  }
  if (framing_fields != ((framing.chunked || framing.length) ? 1 : 0)) __builtin_trap();
  return 0;
}
