// A caller's TCP connection with one lazy deadline (deadline.hpp) instead of
// beast::tcp_stream's timer around every operation. Past the deadline the socket is closed,
// so the operation under way fails (operation_aborted) and so does any that follows.
// An AsyncReadStream and AsyncWriteStream: Beast's HTTP algorithms and asio::ssl::stream
// run on it as they do on a socket.
#pragma once
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <utility>

#include "gateway/proxy/deadline.hpp"

namespace gw {

class CallerSocket {
 public:
  using executor_type = boost::asio::ip::tcp::socket::executor_type;
  using lowest_layer_type = boost::asio::ip::tcp::socket::lowest_layer_type;

  explicit CallerSocket(boost::asio::ip::tcp::socket socket)
      : socket_(std::move(socket)), deadline_(socket_, Deadline::Action::close) {}

  executor_type get_executor() noexcept { return socket_.get_executor(); }
  lowest_layer_type& lowest_layer() { return socket_.lowest_layer(); }
  boost::asio::ip::tcp::socket& socket() { return socket_; }

  template <class Buffers, class Token>
  auto async_read_some(const Buffers& buffers, Token&& token) {
    return socket_.async_read_some(buffers, std::forward<Token>(token));
  }
  template <class Buffers, class Token>
  auto async_write_some(const Buffers& buffers, Token&& token) {
    return socket_.async_write_some(buffers, std::forward<Token>(token));
  }

  // Guards the operations that follow, until expires_never.
  void expires_after(Deadline::Clock::duration d) { deadline_.expires_after(d); }
  void expires_never() { deadline_.expires_never(); }

  void close() {
    boost::system::error_code ignored;
    socket_.close(ignored);
  }

 private:
  boost::asio::ip::tcp::socket socket_;
  Deadline deadline_;
};

}  // namespace gw
