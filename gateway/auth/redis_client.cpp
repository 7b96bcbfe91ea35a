#include "gateway/auth/redis_client.hpp"

#include <hiredis/hiredis.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>
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

struct RedisClient::Impl {
  asio::io_context ioc{1};
  asio::executor_work_guard<asio::io_context::executor_type> work{ioc.get_executor()};
  std::thread thread;
  std::string host, port, password, db;
  Millis timeout;
  std::unique_ptr<beast::tcp_stream> stream;
  std::unique_ptr<redisReader, decltype(&redisReaderFree)> reader{nullptr, redisReaderFree};
  bool busy = false;
  std::deque<std::shared_ptr<asio::steady_timer>> queue;
  std::atomic<bool> reachable{true};
  std::chrono::steady_clock::time_point next_connect{};
  Millis backoff{0};

  void close() {
    stream.reset();
    reader.reset();
  }

  // One request/reply exchange on the open connection.
  asio::awaitable<RedisResult> roundtrip(std::vector<std::string> args) {
    RedisResult result;
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    char* cmd = nullptr;
    int n = redisFormatCommandArgv(&cmd, static_cast<int>(args.size()), argv.data(), lens.data());
    if (n < 0) {
      result.ec = asio::error::invalid_argument;
      result.error = "cannot encode the command";
      co_return result;
    }
    std::string bytes(cmd, static_cast<std::size_t>(n));
    redisFreeCommand(cmd);
    stream->expires_after(timeout);
    auto [wec, wn] = co_await asio::async_write(*stream, asio::buffer(bytes), nothrow);
    if (wec) {
      result.ec = wec;
      result.error = "write: " + wec.message();
      co_return result;
    }
    char buf[16 * 1024];
    for (;;) {
      void* raw = nullptr;
      if (redisReaderGetReply(reader.get(), &raw) != REDIS_OK) {
        result.ec = asio::error::invalid_argument;
        result.error = "protocol error";
        co_return result;
      }
      if (raw) {
        result.reply = convert(static_cast<redisReply*>(raw));
        freeReplyObject(raw);
        co_return result;
      }
      stream->expires_after(timeout);
      auto [rec, rn] = co_await stream->async_read_some(asio::buffer(buf), nothrow);
      if (rec) {
        result.ec = rec;
        result.error = "read: " + rec.message();
        co_return result;
      }
      redisReaderFeed(reader.get(), buf, rn);
    }
  }

  asio::awaitable<RedisResult> connect() {
    RedisResult result;
    auto now = std::chrono::steady_clock::now();
    if (now < next_connect) {
      result.ec = asio::error::try_again;
      result.error = "reconnecting (backoff)";
      co_return result;
    }
    stream = std::make_unique<beast::tcp_stream>(ioc);
    reader.reset(redisReaderCreate());
    asio::ip::tcp::resolver resolver(ioc);
    auto [rec, eps] = co_await resolver.async_resolve(host, port, nothrow);
    beast::error_code ec = rec;
    if (!ec) {
      stream->expires_after(timeout);
      auto [cec, ep] = co_await stream->async_connect(eps, nothrow);
      ec = cec;
    }
    if (ec) {
      close();
      backoff = backoff.count() ? std::min(backoff * 2, Millis(5000)) : Millis(100);
      next_connect = std::chrono::steady_clock::now() + backoff;
      result.ec = ec;
      result.error = "connect: " + ec.message();
      co_return result;
    }
    stream->socket().set_option(asio::ip::tcp::no_delay(true));
    if (!password.empty()) {
      std::vector<std::string> auth{"AUTH", password};
      auto r = co_await roundtrip(std::move(auth));
      if (!r.ok()) {
        close();
        r.error = "AUTH failed";
        co_return r;
      }
    }
    if (!db.empty() && db != "0") {
      std::vector<std::string> select{"SELECT", db};
      auto r = co_await roundtrip(std::move(select));
      if (!r.ok()) {
        close();
        r.error = "SELECT " + db + " failed";
        co_return r;
      }
    }
    backoff = Millis(0);
    co_return result;
  }

  asio::awaitable<RedisResult> run(std::vector<std::string> args) {
    // One command at a time: later callers queue on a timer that the finisher cancels.
    while (busy) {
      auto t = std::make_shared<asio::steady_timer>(ioc, std::chrono::hours(1));
      queue.push_back(t);
      co_await t->async_wait(nothrow);
    }
    busy = true;
    RedisResult result;
    if (!stream) result = co_await connect();
    if (!result.ec && stream) {
      result = co_await roundtrip(args);
      if (result.ec) close();
    }
    reachable = !result.ec;
    busy = false;
    if (!queue.empty()) {
      queue.front()->cancel();
      queue.pop_front();
    }
    co_return result;
  }
};

RedisClient::RedisClient(const RedisConfig& config, Millis timeout)
    : impl_(std::make_shared<Impl>()), reachable_(impl_->reachable) {
  auto url = boost::urls::parse_uri(config.url);
  if (!url || url->scheme() != "redis")
    throw std::invalid_argument("store.redis.url must look like redis://host:6379/0");
  impl_->host = std::string(url->host());
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

asio::awaitable<RedisResult> RedisClient::exec(std::vector<std::string> args) {
  co_return co_await asio::co_spawn(impl_->ioc, impl_->run(std::move(args)), asio::use_awaitable);
}

RedisResult RedisClient::exec_blocking(std::vector<std::string> args) {
  return asio::co_spawn(impl_->ioc, impl_->run(std::move(args)), asio::use_future).get();
}

}  // namespace gw
