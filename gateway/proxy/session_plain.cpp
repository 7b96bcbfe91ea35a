// The plain-TCP instantiation of the downstream session.
#include "gateway/proxy/session_caller.hpp"
#include "gateway/proxy/session_cooldown.hpp"
#include "gateway/proxy/session_errors.hpp"
#include "gateway/proxy/session_impl.hpp"
#include "gateway/proxy/session_relay.hpp"
#include "gateway/proxy/session_upstream.hpp"

namespace gw {

asio::awaitable<void> serve_plain_session(tcp::socket socket, Worker& worker) {
  CallerSocket stream(std::move(socket));
  Session<CallerSocket> session(stream, worker);
  co_await session.run();
}

}  // namespace gw
