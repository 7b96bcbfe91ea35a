// Sends a token request over verified TLS and classifies the answer (the network half of
// oauth.hpp, kept apart so the pure half builds without Asio and Beast).
#pragma once
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ssl/context.hpp>

#include <memory>

#include "gateway/auth/oauth.hpp"

namespace gw {

// Network failures and timeouts are transient.
boost::asio::awaitable<TokenResult> fetch_token(boost::asio::any_io_executor executor,
                                                std::shared_ptr<boost::asio::ssl::context> tls,
                                                TokenRequest request, Millis timeout);

}  // namespace gw
