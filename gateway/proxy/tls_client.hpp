// A TLS client connection driven the way nginx and haproxy drive theirs: OpenSSL reads and
// writes the non-blocking socket itself (read-ahead on, so a record costs one read), and the
// event loop only waits for readiness when OpenSSL asks for it. Asio's ssl::stream instead
// copies every record through a memory BIO pair and wraps each operation in composed layers,
// about a tenth of the gateway's instructions per request.
//
// One deadline per connection: `expires_after` only stores a time; one timer, armed when
// nothing is armed or the new deadline is earlier, re-arms itself when it fires early and
// cancels the socket's operations when the deadline has passed. The operations then answer
// beast::error::timeout, as beast::tcp_stream does. (Arming a timer around every read and
// write costs a heap operation and a lock each.)
//
// Writing to a socket the peer reset raises SIGPIPE: the process ignores it (app.cpp).
#pragma once
#include <openssl/ssl.h>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <utility>

namespace gw {

class TlsClient {
 public:
  using error_code = boost::system::error_code;
  using Clock = std::chrono::steady_clock;

  TlsClient(boost::asio::io_context& ioc, SSL_CTX* ctx);
  ~TlsClient();
  TlsClient(const TlsClient&) = delete;
  TlsClient& operator=(const TlsClient&) = delete;

  boost::asio::ip::tcp::socket& socket() { return socket_; }
  SSL* native_handle() { return ssl_; }
  // Bytes OpenSSL read from the socket but nobody consumed yet.
  bool has_pending() const { return SSL_has_pending(ssl_) == 1; }

  void expires_after(Clock::duration d) { set_deadline(Clock::now() + d); }
  void expires_never() { deadline_->at = Clock::time_point::max(); }

  boost::asio::awaitable<error_code> connect(
      const boost::asio::ip::tcp::resolver::results_type& endpoints);
  // SNI (unless `ip_literal`), chain verification against the context's trust store, and the
  // host name (or IP address) checked against the certificate.
  boost::asio::awaitable<error_code> handshake(const std::string& host, bool ip_literal);
  boost::asio::awaitable<std::pair<error_code, std::size_t>> read_some(
      boost::asio::mutable_buffer buffer);
  boost::asio::awaitable<error_code> write(boost::asio::const_buffer buffer);

 private:
  // Shared with the timer's handler, which may run after the connection is gone.
  struct Deadline {
    Clock::time_point at = Clock::time_point::max();
    TlsClient* owner = nullptr;  // null once the connection is destroyed
    bool armed = false;
    bool fired = false;
  };

  void set_deadline(Clock::time_point at);
  void arm();
  // Runs an OpenSSL call until it succeeds or fails for good, waiting for the socket as it asks.
  template <class Call>
  boost::asio::awaitable<error_code> drive(Call call);

  boost::asio::ip::tcp::socket socket_;
  boost::asio::steady_timer timer_;
  std::shared_ptr<Deadline> deadline_;
  SSL* ssl_;
};

}  // namespace gw
