#include "gateway/auth/token_provider.hpp"

namespace gw {

boost::asio::awaitable<CredentialResult> StaticTokenProvider::acquire(
    std::shared_ptr<Connection> c) {
  auto cred = c->current();
  if (!cred) co_return CredentialResult{nullptr, "connection " + c->id + " has no credential"};
  if (cred->expires_at <= Clock::now())
    co_return CredentialResult{nullptr, "the static token of connection " + c->id + " has expired"};
  co_return CredentialResult{std::move(cred), {}};
}

boost::asio::awaitable<CredentialResult> StaticTokenProvider::rejected(
    std::shared_ptr<Connection> c, std::shared_ptr<const Credential>) {
  co_return CredentialResult{nullptr, "the vendor rejected the static credential of " + c->id};
}

}  // namespace gw
