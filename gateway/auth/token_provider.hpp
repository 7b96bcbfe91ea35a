// The seam between the proxy and the token lifecycle: the proxy asks for a connection's
// credential before each request and reports a rejection; the provider decides whether to
// wait for, start or share a refresh. TokenCache implements it (static credentials too).
#pragma once
#include <boost/asio/awaitable.hpp>

#include <cstddef>
#include <memory>
#include <string>

#include "gateway/auth/credential.hpp"

namespace gw {

struct CredentialResult {
  std::shared_ptr<const Credential> credential;  // null when none is usable
  std::string error;  // why not: shown to the caller in the 503 message (never a secret)
};

class TokenProvider {
 public:
  virtual ~TokenProvider() = default;
  // The credential to inject now. Never an expired one; may wait for a running refresh.
  virtual boost::asio::awaitable<CredentialResult> acquire(std::shared_ptr<Connection> c) = 0;
  // The vendor rejected `used` for the request `what` (a hash of its method and path).
  // Returns the credential to replay with (a newer one), or none when a replay cannot help.
  virtual boost::asio::awaitable<CredentialResult> rejected(std::shared_ptr<Connection> c,
                                                            std::shared_ptr<const Credential> used,
                                                            std::size_t what) = 0;
  // The vendor rejected `replayed`, a token it had not seen before, for `what` too: that
  // rejection is not about the token (a permission, a wrong path), and the same request must
  // not cause more refreshes while that token is current.
  virtual void rejected_again(Connection& c, const Credential& replayed, std::size_t what) = 0;
};

}  // namespace gw
