// A small Redis client on Asio: hiredis encodes commands and parses replies (RESP); the
// I/O, timeouts, AUTH, SELECT and reconnection are ours. It runs on its own event loop
// thread; exec() may be awaited from any other loop. Commands run one at a time, which is
// plenty for token records and locks.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/system/error_code.hpp>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gateway/config/config.hpp"

namespace gw {

struct RedisReply {
  enum class Type { nil, string, integer, array, status, error } type = Type::nil;
  std::string str;
  long long integer = 0;
  std::vector<RedisReply> elements;
};

struct RedisResult {
  boost::system::error_code ec;  // I/O failure or timeout: Redis unreachable
  std::string error;             // what went wrong, for logs and /readyz
  RedisReply reply;
  bool ok() const { return !ec && reply.type != RedisReply::Type::error; }
};

class RedisClient {
 public:
  // Throws std::invalid_argument for a malformed url.
  RedisClient(const RedisConfig& config, Millis timeout);
  ~RedisClient();

  boost::asio::awaitable<RedisResult> exec(std::vector<std::string> args);
  // Blocking form for the start, before the event loops run.
  RedisResult exec_blocking(std::vector<std::string> args);
  bool reachable() const { return reachable_.load(); }

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
  std::atomic<bool>& reachable_;
};

}  // namespace gw
