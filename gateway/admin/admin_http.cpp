// The admin listener's HTTP helpers declared in admin_http.hpp.
#include "gateway/admin/admin_http.hpp"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <boost/beast/http.hpp>

#include <ctime>

#include "gateway/auth/crypto.hpp"

namespace gw::admin_http {

namespace beast = boost::beast;
namespace http = beast::http;
using json = nlohmann::json;

AdminResponse json_response(http::status status, const json& body) {
  AdminResponse res{status, 11};
  res.set(http::field::content_type, "application/json");
  res.set(http::field::cache_control, "no-store");
  res.body() = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return res;
}

AdminResponse error_response(http::status status, std::string_view code, std::string_view msg) {
  return json_response(status, {{"error", code}, {"message", msg}});
}

std::string html_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

AdminResponse html_page(http::status status, const std::string& title, const std::string& text) {
  AdminResponse res{status, 11};
  res.set(http::field::content_type, "text/html; charset=utf-8");
  res.set(http::field::cache_control, "no-store");
  res.set("Content-Security-Policy", "default-src 'none'");
  res.body() = "<!doctype html><html><head><meta charset=\"utf-8\"><title>" + html_escape(title) +
               "</title></head><body><h1 id=\"title\">" + html_escape(title) +
               "</h1><p id=\"message\">" + html_escape(text) + "</p></body></html>";
  return res;
}

std::string iso_time(Clock::time_point t) {
  auto secs = Clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

json time_or_null(Clock::time_point t) {
  if (t == Clock::time_point::max() || t == Clock::time_point::min() || t == Clock::time_point{})
    return nullptr;
  return iso_time(t);
}

std::string random_token() {
  return crypto::hex(crypto::random_bytes(24));
}

std::string cookie_value(const AdminRequest& req, std::string_view name) {
  std::string_view header(req[http::field::cookie].data(), req[http::field::cookie].size());
  std::size_t pos = 0;
  while (pos < header.size()) {
    auto end = header.find(';', pos);
    auto part =
        header.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
    while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
    if (part.substr(0, name.size()) == name && part.size() > name.size() &&
        part[name.size()] == '=')
      return std::string(part.substr(name.size() + 1));
    if (end == std::string_view::npos) break;
    pos = end + 1;
  }
  return "";
}

bool equal_constant_time(std::string_view a, std::string_view b) {
  // Hashing first makes the comparison's time independent of both lengths.
  unsigned char da[SHA256_DIGEST_LENGTH], db[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(a.data()), a.size(), da);
  SHA256(reinterpret_cast<const unsigned char*>(b.data()), b.size(), db);
  return CRYPTO_memcmp(da, db, sizeof da) == 0;
}

}  // namespace gw::admin_http
