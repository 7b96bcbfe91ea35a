#include "gateway/auth/redis_client.hpp"

#include <hiredis/hiredis.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/url/parse.hpp>

#include <deque>

namespace gw {

namespace asio = boost::asio;
namespace beast = boost::beast;
constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

namespace {

RedisReply convert(const redisReply* r) {
  RedisReply out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = RedisReply::Type::string;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = RedisReply::Type::status;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = RedisReply::Type::error;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = RedisReply::Type::integer;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::array;
      for (std::size_t i = 0; i < r->elements; ++i) out.elements.push_back(convert(r->element[i]));
      break;
    default:
      out.type = RedisReply::Type::nil;
  }
  return out;
}

}  // namespace

// One connection: the socket (under TLS for rediss://) and hiredis's reply parser, which
// keeps unparsed bytes.
struct RedisConn {
  std::unique_ptr<beast::tcp_stream> stream;  // plain redis://
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls;
  std::unique_ptr<redisReader, decltype(&redisReaderFree)> reader{nullptr, redisReaderFree};
  bool open() const { return stream || tls; }
  beast::tcp_stream& tcp() { return tls ? beast::get_lowest_layer(*tls) : *stream; }
  template <class Buffers>
  asio::awaitable<std::tuple<beast::error_code, std::size_t>> read_some(const Buffers& b) {
    if (tls) co_return co_await tls->async_read_some(b, nothrow);
    co_return co_await stream->async_read_some(b, nothrow);
  }
  template <class Buffers>
  asio::awaitable<std::tuple<beast::error_code, std::size_t>> write(const Buffers& b) {
    if (tls) co_return co_await asio::async_write(*tls, b, nothrow);
    co_return co_await asio::async_write(*stream, b, nothrow);
  }
  void close() {
    stream.reset();
    tls.reset();
    reader.reset();
  }
};

struct RedisClient::Impl {
  asio::io_context ioc{1};
  asio::executor_work_guard<asio::io_context::executor_type> work{ioc.get_executor()};
  std::thread thread;
  std::string host, port, user, password, db;
  std::shared_ptr<asio::ssl::context> ssl;  // rediss://
  Millis timeout;
  RedisConn conn;
  bool busy = false;
  std::deque<std::shared_ptr<asio::steady_timer>> queue;
  std::atomic<bool> reachable{true};
  std::atomic<std::int64_t> recovered_at{0};  // steady clock ticks of the last recovery
  std::atomic<bool> subscribed{false};
  std::chrono::steady_clock::time_point next_connect{};
  Millis backoff{0};

  static RedisResult failure(beast::error_code ec, std::string what) {
    RedisResult r;
    r.ec = ec;
    r.error = std::move(what);
    return r;
  }

  // The next reply on `c`; no deadline when `limit` is zero (a subscription's idle wait).
  asio::awaitable<RedisResult> read_reply(RedisConn& c, Millis limit) {
    char buf[16 * 1024];
    for (;;) {
      void* raw = nullptr;
      if (redisReaderGetReply(c.reader.get(), &raw) != REDIS_OK)
        co_return failure(asio::error::invalid_argument, "protocol error");
      if (raw) {
        RedisResult result;
        result.reply = convert(static_cast<redisReply*>(raw));
        freeReplyObject(raw);
        co_return result;
      }
      if (limit.count())
        c.tcp().expires_after(limit);
      else
        c.tcp().expires_never();
      auto [ec, n] = co_await c.read_some(asio::buffer(buf));
      if (ec) co_return failure(ec, "read: " + ec.message());
      redisReaderFeed(c.reader.get(), buf, n);
    }
  }

  // Writes every command in one go, then reads their replies in order (pipelining).
  asio::awaitable<std::vector<RedisResult>> exchange(RedisConn& c, std::vector<Command> commands) {
    std::string bytes;
    for (const auto& args : commands) {
      std::vector<const char*> argv;
      std::vector<std::size_t> lens;
      for (const auto& a : args) {
        argv.push_back(a.data());
        lens.push_back(a.size());
      }
      char* cmd = nullptr;
      int n = redisFormatCommandArgv(&cmd, static_cast<int>(args.size()), argv.data(), lens.data());
      if (n < 0)
        co_return std::vector<RedisResult>(
            commands.size(), failure(asio::error::invalid_argument, "cannot encode the command"));
      bytes.append(cmd, static_cast<std::size_t>(n));
      redisFreeCommand(cmd);
    }
    c.tcp().expires_after(timeout);
    auto [wec, wn] = co_await c.write(asio::buffer(bytes));
    if (wec)
      co_return std::vector<RedisResult>(commands.size(), failure(wec, "write: " + wec.message()));
    std::vector<RedisResult> results;
    for (std::size_t i = 0; i < commands.size(); ++i) {
      auto r = co_await read_reply(c, timeout);
      if (r.ec) {
        results.resize(commands.size(), r);
        break;
      }
      results.push_back(std::move(r));
    }
    co_return results;
  }

  // Resolves, connects, authenticates and selects the database on `c`.
  asio::awaitable<RedisResult> open(RedisConn& c) {
    if (ssl)
      c.tls = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(ioc, *ssl);
    else
      c.stream = std::make_unique<beast::tcp_stream>(ioc);
    c.reader.reset(redisReaderCreate());
    asio::ip::tcp::resolver resolver(ioc);
    auto [rec, eps] = co_await resolver.async_resolve(host, port, nothrow);
    beast::error_code ec = rec;
    if (!ec) {
      c.tcp().expires_after(timeout);
      auto [cec, ep] = co_await c.tcp().async_connect(eps, nothrow);
      ec = cec;
    }
    if (ec) {
      c.close();
      co_return failure(ec, "connect: " + ec.message());
    }
    c.tcp().socket().set_option(asio::ip::tcp::no_delay(true));
    c.tcp().socket().set_option(asio::socket_base::keep_alive(true));
    if (c.tls) {
      // Verified like a vendor: the chain against the trust store, the name or IP against
      // the certificate; a client certificate goes when the server asks for one.
      boost::system::error_code not_ip;
      asio::ip::make_address(host, not_ip);
      if (not_ip) SSL_set_tlsext_host_name(c.tls->native_handle(), host.c_str());
      c.tls->set_verify_mode(asio::ssl::verify_peer);
      c.tls->set_verify_callback(asio::ssl::host_name_verification(host));
      auto [hec] = co_await c.tls->async_handshake(asio::ssl::stream_base::client, nothrow);
      if (hec) {
        c.close();
        co_return failure(hec, "TLS handshake: " + hec.message());
      }
    }
    std::vector<Command> hello;
    if (!user.empty())
      hello.push_back({"AUTH", user, password});  // an ACL user (Redis 6+)
    else if (!password.empty())
      hello.push_back({"AUTH", password});
    if (!db.empty() && db != "0") hello.push_back({"SELECT", db});
    if (!hello.empty()) {
      auto rs = co_await exchange(c, std::move(hello));
      for (std::size_t i = 0; i < rs.size(); ++i) {
        if (rs[i].ok()) continue;
        c.close();
        bool auth = (!password.empty() || !user.empty()) && i == 0;
        auto r = rs[i];
        if (!r.ec) r.ec = asio::error::access_denied;
        r.error = auth ? "AUTH failed" : "SELECT " + db + " failed";
        co_return r;
      }
    }
    co_return RedisResult{};
  }

  asio::awaitable<std::vector<RedisResult>> run(std::vector<Command> commands) {
    // One exchange at a time: later callers queue on a timer that the finisher cancels.
    while (busy) {
      auto t = std::make_shared<asio::steady_timer>(ioc, std::chrono::hours(1));
      queue.push_back(t);
      co_await t->async_wait(nothrow);
    }
    busy = true;
    std::vector<RedisResult> results;
    if (!conn.open()) {
      if (std::chrono::steady_clock::now() < next_connect) {
        results.assign(commands.size(), failure(asio::error::try_again, "reconnecting (backoff)"));
      } else {
        auto r = co_await open(conn);
        if (r.ec) {
          // At most a second between tries: a pending record must reach a Redis that is back
          // within two (SPEC 6.9), and a reconnect to it costs nothing.
          backoff = backoff.count() ? std::min(backoff * 2, Millis(1000)) : Millis(100);
          next_connect = std::chrono::steady_clock::now() + backoff;
          results.assign(commands.size(), r);
        } else {
          backoff = Millis(0);
        }
      }
    }
    if (results.empty()) {
      results = co_await exchange(conn, std::move(commands));
      if (!results.empty() && results.front().ec) conn.close();
    }
    bool now_reachable = results.empty() || !results.front().ec;
    if (now_reachable && !reachable)
      recovered_at = std::chrono::steady_clock::now().time_since_epoch().count();
    reachable = now_reachable;
    busy = false;
    if (!queue.empty()) {
      queue.front()->cancel();
      queue.pop_front();
    }
    co_return results;
  }

  asio::awaitable<void> subscriber(std::string channel,
                                   std::function<void(const std::string&)> on_message) {
    Millis delay(100);
    asio::steady_timer pause(ioc);
    for (;;) {
      RedisConn c;
      auto r = co_await open(c);
      if (!r.ec) {
        std::vector<Command> subscribe{{"SUBSCRIBE", channel}};
        auto rs = co_await exchange(c, std::move(subscribe));
        if (rs.front().ok()) {
          subscribed = true;
          delay = Millis(100);
          on_message("");
          for (;;) {
            auto m = co_await read_reply(c, Millis(0));
            if (m.ec) break;
            const auto& e = m.reply.elements;
            if (m.reply.type == RedisReply::Type::array && e.size() == 3 && e[0].str == "message")
              on_message(e[2].str);
          }
          subscribed = false;
        }
      }
      c.close();
      pause.expires_after(delay);
      co_await pause.async_wait(nothrow);
      delay = std::min(delay * 2, Millis(1000));
    }
  }
};

namespace {

// The trust for rediss://: the system store, plus store.redis.tls.ca_file; the client
// certificate when one is configured. Throws std::invalid_argument naming the file.
std::shared_ptr<asio::ssl::context> make_tls(const RedisTlsConfig& cfg) {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                   asio::ssl::context::no_tlsv1_1);
  boost::system::error_code ec;
  ctx->set_default_verify_paths(ec);
  auto load = [](const std::string& what, const std::string& file, auto&& f) {
    boost::system::error_code e;
    f(e);
    if (e) throw std::invalid_argument("store.redis.tls." + what + ": cannot use " + file);
  };
  if (!cfg.ca_file.empty())
    load("ca_file", cfg.ca_file, [&](auto& e) { ctx->load_verify_file(cfg.ca_file, e); });
  if (!cfg.cert_file.empty()) {
    load("cert_file", cfg.cert_file,
         [&](auto& e) { ctx->use_certificate_chain_file(cfg.cert_file, e); });
    load("key_file", cfg.key_file,
         [&](auto& e) { ctx->use_private_key_file(cfg.key_file, asio::ssl::context::pem, e); });
  }
  return ctx;
}

}  // namespace

RedisClient::RedisClient(const RedisConfig& config, Millis timeout)
    : impl_(std::make_shared<Impl>()), reachable_(impl_->reachable) {
  auto url = boost::urls::parse_uri(config.url);
  if (!url || (url->scheme() != "redis" && url->scheme() != "rediss"))
    throw std::invalid_argument(
        "store.redis.url must look like redis://host:6379/0 or rediss://user@host:6380/0");
  impl_->host = std::string(url->host_address());
  if (url->has_userinfo()) impl_->user = std::string(url->user());
  if (url->scheme() == "rediss") impl_->ssl = make_tls(config.tls);
  impl_->port = url->has_port() ? std::string(url->port()) : "6379";
  std::string path(url->path());
  impl_->db = path.size() > 1 ? path.substr(1) : "0";
  impl_->password = config.password;
  if (impl_->password.empty() && url->has_password())
    impl_->password = std::string(url->password());
  impl_->timeout = timeout;
  impl_->thread = std::thread([impl = impl_] { impl->ioc.run(); });
}

RedisClient::~RedisClient() {
  impl_->work.reset();
  impl_->ioc.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

asio::awaitable<RedisResult> RedisClient::exec(Command args) {
  std::vector<Command> one;
  one.push_back(std::move(args));
  auto rs = co_await asio::co_spawn(impl_->ioc, impl_->run(std::move(one)), asio::use_awaitable);
  co_return std::move(rs.front());
}

RedisResult RedisClient::exec_blocking(Command args) {
  std::vector<Command> one;
  one.push_back(std::move(args));
  return pipeline_blocking(std::move(one)).front();
}

std::vector<RedisResult> RedisClient::pipeline_blocking(std::vector<Command> commands) {
  if (commands.empty()) return {};
  return asio::co_spawn(impl_->ioc, impl_->run(std::move(commands)), asio::use_future).get();
}

void RedisClient::subscribe(std::string channel,
                            std::function<void(const std::string&)> on_message) {
  asio::co_spawn(impl_->ioc, impl_->subscriber(std::move(channel), std::move(on_message)),
                 asio::detached);
}

bool RedisClient::recovered_within(Millis d) const {
  auto at = impl_->recovered_at.load();
  if (at == 0) return false;
  auto since = std::chrono::steady_clock::now() -
               std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(at));
  return since < d;
}

bool RedisClient::subscribed() const {
  return impl_->subscribed.load();
}

}  // namespace gw
