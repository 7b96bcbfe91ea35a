// The plain-TCP instantiation of the downstream session.
#include "gateway/proxy/session_impl.hpp"

namespace gw {

asio::awaitable<void> serve_plain_session(tcp::socket socket, Worker& worker) {
  beast::tcp_stream stream(std::move(socket));
  Session<beast::tcp_stream> session(stream, worker);
  co_await session.run();
}

}  // namespace gw
