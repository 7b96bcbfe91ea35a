// The entry of every downstream connection, and the TLS instantiation of the session.
#include "gateway/proxy/session_caller.hpp"
#include "gateway/proxy/session_cooldown.hpp"
#include "gateway/proxy/session_errors.hpp"
#include "gateway/proxy/session_impl.hpp"
#include "gateway/proxy/session_relay.hpp"
#include "gateway/proxy/session_upstream.hpp"

namespace gw {

asio::awaitable<void> serve_downstream(tcp::socket socket, Worker& worker) {
  // The accept loop counted the connection in both (app.cpp); they are given back here.
  struct Count {
    std::atomic<std::int64_t>& n;
    std::atomic<std::int64_t>& on_this_loop;
    ~Count() {
      --n;
      on_this_loop.fetch_sub(1, std::memory_order_relaxed);
    }
  } count{worker.shared.downstream_connections, worker.open};
  auto runtime = worker.shared.runtime.load();
  socket.set_option(tcp::no_delay(true));
  if (!runtime->server_tls) {
    co_await serve_plain_session(std::move(socket), worker);
    co_return;
  }
  beast::ssl_stream<CallerSocket> stream(std::move(socket), *runtime->server_tls);
  beast::get_lowest_layer(stream).expires_after(runtime->config.limits.header_timeout);
  auto [ec] = co_await stream.async_handshake(asio::ssl::stream_base::server, nothrow);
  beast::get_lowest_layer(stream).expires_never();
  if (ec) co_return;
  Session<beast::ssl_stream<CallerSocket>> session(stream, worker);
  co_await session.run();
}

}  // namespace gw
