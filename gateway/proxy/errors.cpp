#include "gateway/proxy/errors.hpp"

#include <nlohmann/json.hpp>

namespace gw {

namespace http = boost::beast::http;

http::response<http::string_body> make_error_response(http::status status, std::string_view code,
                                                      std::string_view message,
                                                      std::string_view request_id,
                                                      bool keep_alive) {
  http::response<http::string_body> res{status, 11};
  res.set(http::field::content_type, "application/json");
  res.set("X-Gateway-Error", code);
  res.set("X-Request-Id", request_id);
  nlohmann::json body = {{"error", code}, {"message", message}, {"request_id", request_id}};
  res.body() = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  res.keep_alive(keep_alive);
  res.prepare_payload();
  return res;
}

}  // namespace gw
