// The token endpoint as the token cache sees it: one exchange, no retries, never throws
// (transport failures come back as TokenFailure::transient). HttpsTokenEndpoint is the real
// one; unit tests give a scripted fake.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ssl/context.hpp>

#include <functional>
#include <memory>

#include "gateway/auth/oauth.hpp"

namespace gw {

class TokenEndpoint {
 public:
  virtual ~TokenEndpoint() = default;
  virtual boost::asio::awaitable<TokenResult> exchange(TokenRequest request, Millis timeout) = 0;
};

// Sends the request over verified TLS with the client context current at the time (a reload
// may replace it).
class HttpsTokenEndpoint final : public TokenEndpoint {
 public:
  using TlsSource = std::function<std::shared_ptr<boost::asio::ssl::context>()>;
  explicit HttpsTokenEndpoint(TlsSource tls) : tls_(std::move(tls)) {}
  boost::asio::awaitable<TokenResult> exchange(TokenRequest request, Millis timeout) override;

 private:
  TlsSource tls_;
};

}  // namespace gw
