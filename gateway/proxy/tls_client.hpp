// A TLS client connection driven the way nginx and haproxy drive theirs, with one layer
// between OpenSSL and the socket instead of Asio's ssl::stream (which copies every record
// through a BIO pair and wraps each read and write in composed operations):
//  - OpenSSL writes straight to the socket (send(2) with MSG_NOSIGNAL, from its BIO);
//  - it reads from a buffer that one Asio receive fills whenever OpenSSL runs dry, so the
//    reactor does the read the moment the vendor's bytes arrive: one system call per answer,
//    no speculative read that finds nothing, no epoll_ctl to wait for readiness.
//
// One lazy deadline per connection (deadline.hpp): past it, the operation under way (and any
// started before the next expires_after) answers beast::error::timeout, as with
// beast::tcp_stream.
#pragma once
#include <openssl/ssl.h>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <utility>

#include "gateway/proxy/deadline.hpp"

namespace gw {

class TlsClient {
 public:
  using error_code = boost::system::error_code;

  TlsClient(boost::asio::io_context& ioc, SSL_CTX* ctx);
  ~TlsClient();
  TlsClient(const TlsClient&) = delete;
  TlsClient& operator=(const TlsClient&) = delete;

  boost::asio::ip::tcp::socket& socket() { return socket_; }
  SSL* native_handle() { return ssl_; }
  // Bytes read from the socket that nobody consumed yet.
  bool has_pending() const { return in_begin_ != in_end_ || SSL_has_pending(ssl_) == 1; }

  void expires_after(Deadline::Clock::duration d) { deadline_.expires_after(d); }
  void expires_never() { deadline_.expires_never(); }

  boost::asio::awaitable<error_code> connect(
      const boost::asio::ip::tcp::resolver::results_type& endpoints);
  // SNI (unless `ip_literal`), chain verification against the context's trust store, and the
  // host name (or IP address) checked against the certificate.
  boost::asio::awaitable<error_code> handshake(const std::string& host, bool ip_literal);
  boost::asio::awaitable<std::pair<error_code, std::size_t>> read_some(
      boost::asio::mutable_buffer buffer);
  boost::asio::awaitable<error_code> write(boost::asio::const_buffer buffer);

 private:
  // Runs an OpenSSL call until it succeeds or fails for good, waiting for the socket as it asks.
  template <class Call>
  boost::asio::awaitable<error_code> drive(Call call);

  // The BIO OpenSSL reads from and writes through (see the .cpp).
  static const BIO_METHOD* bio_method();
  static int bio_read(BIO* bio, char* out, int size);
  static int bio_write(BIO* bio, const char* data, int size);

  boost::asio::ip::tcp::socket socket_;
  Deadline deadline_;  // cancels the socket's operations
  SSL* ssl_;
  std::unique_ptr<char[]> in_;  // ciphertext received, not yet read by OpenSSL
  std::size_t in_begin_ = 0, in_end_ = 0;
  bool in_eof_ = false;
  bool just_wrote_ = false;  // the last call was write(): the next receive waits its turn
};

}  // namespace gw
