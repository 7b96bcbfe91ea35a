// The admin listener (SPEC section 7): health and readiness now; metrics and the admin API
// are served from here too.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <memory>

#include "gateway/proxy/proxy.hpp"

namespace gw {

class AdminServer {
 public:
  AdminServer(boost::asio::io_context& ioc, ProxyShared& shared,
              std::unique_ptr<boost::asio::ip::tcp::acceptor>& acceptor);
  void start();
  void stop();

 private:
  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> serve(boost::asio::ip::tcp::socket socket);

  boost::asio::io_context& ioc_;
  ProxyShared& shared_;
  std::unique_ptr<boost::asio::ip::tcp::acceptor>& acceptor_;
};

}  // namespace gw
