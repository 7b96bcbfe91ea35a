// A small Redis client on Asio: hiredis encodes commands and parses replies (RESP); the
// I/O, timeouts, AUTH, SELECT and reconnection are ours. It runs on its own event loop
// thread; exec() may be awaited from any other loop. Exchanges run one at a time on one
// connection (plenty for token records and locks); pipeline() sends several commands in one
// write and reads their replies in order. subscribe() keeps a second connection in
// SUBSCRIBE mode for change notifications.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/system/error_code.hpp>

#include <atomic>
#include <functional>
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

  using Command = std::vector<std::string>;

  boost::asio::awaitable<RedisResult> exec(Command args);
  // Blocking forms, for the start and for writes that must be durable before going on.
  RedisResult exec_blocking(Command args);
  // One result per command, in order; an I/O failure fails every command of the batch.
  std::vector<RedisResult> pipeline_blocking(std::vector<Command> commands);
  bool reachable() const { return reachable_.load(); }
  // Whether Redis answered again, after failing, less than `d` ago.
  bool recovered_within(Millis d) const;

  // Calls on_message(payload) on the client's thread for every message published on
  // `channel`, and on_message("") whenever the subscription was (re)established, since
  // messages may have been missed while it was down. Reconnects with backoff. Call once.
  void subscribe(std::string channel, std::function<void(const std::string&)> on_message);
  bool subscribed() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
  std::atomic<bool>& reachable_;
};

}  // namespace gw
