// The gateway's own error answers (SPEC section 5): JSON {"error","message","request_id"}
// with header X-Gateway-Error, so callers can tell them from the vendor's.
#pragma once
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>

#include <string>
#include <string_view>

namespace gw {

boost::beast::http::response<boost::beast::http::string_body> make_error_response(
    boost::beast::http::status status, std::string_view code, std::string_view message,
    std::string_view request_id, bool keep_alive);

}  // namespace gw
