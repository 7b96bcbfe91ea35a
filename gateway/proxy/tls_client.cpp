#include "gateway/proxy/tls_client.hpp"

#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace gw {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);
// One TLS record and its overhead: what a receive asks the socket for.
constexpr std::size_t kInputBytes = 17 * 1024;

int TlsClient::bio_read(BIO* bio, char* out, int size) {
  auto* self = static_cast<TlsClient*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  std::size_t have = self->in_end_ - self->in_begin_;
  if (have == 0) {
    if (self->in_eof_) return 0;
    BIO_set_retry_read(bio);  // drive() receives more
    return -1;
  }
  std::size_t n = std::min(have, static_cast<std::size_t>(size));
  std::memcpy(out, self->in_.get() + self->in_begin_, n);
  self->in_begin_ += n;
  return static_cast<int>(n);
}

int TlsClient::bio_write(BIO* bio, const char* data, int size) {
  auto* self = static_cast<TlsClient*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  ssize_t n =
      ::send(self->socket_.native_handle(), data, static_cast<std::size_t>(size), MSG_NOSIGNAL);
  if (n >= 0) return static_cast<int>(n);
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) BIO_set_retry_write(bio);
  return -1;  // otherwise errno says why (SSL_ERROR_SYSCALL)
}

namespace {

long bio_ctrl(BIO*, int cmd, long, void*) {
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;  // writes are not buffered
}

int bio_create(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

}  // namespace

const BIO_METHOD* TlsClient::bio_method() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "gateway tls");
    if (!m || !BIO_meth_set_read(m, bio_read) || !BIO_meth_set_write(m, bio_write) ||
        !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create))
      throw std::runtime_error("cannot make the OpenSSL BIO method");
    return m;
  }();
  return method;
}

TlsClient::TlsClient(asio::io_context& ioc, SSL_CTX* ctx)
    : socket_(ioc),
      deadline_(socket_, Deadline::Action::cancel),
      ssl_(SSL_new(ctx)),
      in_(std::make_unique_for_overwrite<char[]>(kInputBytes)) {
  if (!ssl_) throw std::runtime_error("SSL_new failed");
  BIO* bio = BIO_new(bio_method());
  if (!bio) {
    SSL_free(ssl_);
    throw std::runtime_error("BIO_new failed");
  }
  BIO_set_data(bio, this);
  SSL_set_bio(ssl_, bio, bio);  // the SSL owns it now
  // Ask the BIO for everything it has, not a record header and then the record.
  SSL_set_read_ahead(ssl_, 1);
}

TlsClient::~TlsClient() {
  SSL_free(ssl_);  // and its BIO; socket_ closes the descriptor
}

namespace {

// What OpenSSL's failure means, in the codes asio::ssl::stream gives: eof for a close_notify,
// stream_truncated for a close without one, the socket's errno, or the library's error.
error_code ssl_failure(int ssl_error, int saved_errno) {
  unsigned long e = ERR_get_error();
  error_code ec;
  if (ssl_error == SSL_ERROR_ZERO_RETURN) {
    ec = asio::error::eof;
  } else if (ssl_error == SSL_ERROR_SYSCALL) {
    ec = saved_errno ? error_code(saved_errno, boost::system::system_category())
                     : error_code(asio::ssl::error::stream_truncated);
  } else if (e && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
    ec = asio::ssl::error::stream_truncated;
  } else if (e) {
    ec = error_code(static_cast<int>(e), asio::error::get_ssl_category());
  } else {
    ec = asio::ssl::error::unspecified_system_error;
  }
  ERR_clear_error();
  return ec;
}

}  // namespace

template <class Call>
asio::awaitable<error_code> TlsClient::drive(Call call) {
  for (;;) {
    if (deadline_.fired()) co_return boost::beast::error::timeout;
    if (ERR_peek_error()) ERR_clear_error();  // SSL_get_error reads the queue
    errno = 0;
    int r = call();
    if (r == 1) co_return error_code{};
    int saved_errno = errno;
    int err = SSL_get_error(ssl_, r);
    if (err == SSL_ERROR_WANT_READ) {
      // OpenSSL consumed all received bytes (bio_read only asks for more then).
      if (just_wrote_) {
        // The vendor cannot have answered a request sent a moment ago, and Asio's receive
        // tries recv(2) before it waits: run what else is ready first, so that the answer
        // has usually arrived by then and one recv(2) reads it instead of two.
        just_wrote_ = false;
        co_await asio::post(socket_.get_executor(), asio::use_awaitable);
        if (deadline_.fired()) co_return boost::beast::error::timeout;
      }
      auto [ec, n] = co_await socket_.async_receive(asio::buffer(in_.get(), kInputBytes), nothrow);
      if (deadline_.fired()) co_return boost::beast::error::timeout;
      if (ec == asio::error::eof) {
        in_eof_ = true;  // OpenSSL tells a close_notify from a truncation
      } else if (ec) {
        co_return ec;
      }
      in_begin_ = 0;
      in_end_ = n;
    } else if (err == SSL_ERROR_WANT_WRITE) {
      auto [ec] = co_await socket_.async_wait(tcp::socket::wait_write, nothrow);
      if (deadline_.fired()) co_return boost::beast::error::timeout;
      if (ec) co_return ec;
    } else {
      co_return ssl_failure(err, saved_errno);
    }
  }
}

asio::awaitable<error_code> TlsClient::connect(const tcp::resolver::results_type& endpoints) {
  error_code ec = asio::error::host_not_found;
  for (const auto& entry : endpoints) {
    if (deadline_.fired()) break;
    error_code ignored;
    socket_.close(ignored);
    auto [cec] = co_await socket_.async_connect(entry.endpoint(), nothrow);
    if (!cec) co_return error_code{};
    ec = cec;
  }
  if (deadline_.fired()) co_return boost::beast::error::timeout;
  co_return ec;
}

asio::awaitable<error_code> TlsClient::handshake(const std::string& host, bool ip_literal) {
  error_code ec;
  socket_.non_blocking(true, ec);
  if (ec) co_return ec;
  SSL_set_verify(ssl_, SSL_VERIFY_PEER, nullptr);
  bool ok = ip_literal ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), host.c_str()) == 1
                       : SSL_set_tlsext_host_name(ssl_, host.c_str()) == 1 &&
                             SSL_set1_host(ssl_, host.c_str()) == 1;
  if (!ok) co_return ssl_failure(SSL_ERROR_SSL, 0);
  co_return co_await drive([this] { return SSL_connect(ssl_); });
}

asio::awaitable<std::pair<error_code, std::size_t>> TlsClient::read_some(
    asio::mutable_buffer buffer) {
  std::size_t n = 0;
  auto ec = co_await drive([&] { return SSL_read_ex(ssl_, buffer.data(), buffer.size(), &n); });
  co_return std::pair{ec, n};
}

asio::awaitable<error_code> TlsClient::write(asio::const_buffer buffer) {
  // Without partial writes, SSL_write_ex succeeds once all of it is sent; after a
  // WANT_WRITE it is called again with the same arguments, as OpenSSL requires.
  std::size_t n = 0;
  if (buffer.size() == 0) co_return error_code{};
  just_wrote_ = true;
  co_return co_await drive([&] { return SSL_write_ex(ssl_, buffer.data(), buffer.size(), &n); });
}

}  // namespace gw
