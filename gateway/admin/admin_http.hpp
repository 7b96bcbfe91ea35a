// Small HTTP helpers of the admin listener (admin_server.cpp, connections_api.cpp,
// onboarding.cpp): JSON and HTML answers, time formatting, tokens, cookies.
#pragma once
#include <boost/beast/http/status.hpp>
#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

#include "gateway/admin/admin_server.hpp"
#include "gateway/auth/credential.hpp"

namespace gw::admin_http {

// A response with `status` and `body` as JSON (invalid UTF-8 replaced), never cached.
AdminResponse json_response(boost::beast::http::status status, const nlohmann::json& body);

// A JSON error response {"error": code, "message": msg} with `status`.
AdminResponse error_response(boost::beast::http::status status, std::string_view code,
                             std::string_view msg);

// `s` with < > & " ' replaced by HTML entities, safe in text and quoted attributes.
std::string html_escape(std::string_view s);

// A minimal HTML page (title and one message, both escaped) under a CSP of default-src 'none'.
AdminResponse html_page(boost::beast::http::status status, const std::string& title,
                        const std::string& text);

// `t` in UTC as ISO 8601 with seconds, e.g. 2024-01-31T12:00:00Z.
std::string iso_time(Clock::time_point t);

// iso_time(t), or JSON null for the unset time points (epoch, min, max).
nlohmann::json time_or_null(Clock::time_point t);

// 24 random bytes from the crypto RNG as 48 lowercase hex characters.
std::string random_token();

// The value of cookie `name` in the request's Cookie header, or "" when absent.
std::string cookie_value(const AdminRequest& req, std::string_view name);

// Whether a == b, in a time independent of their contents and lengths (SHA-256 first).
bool equal_constant_time(std::string_view a, std::string_view b);

}  // namespace gw::admin_http
