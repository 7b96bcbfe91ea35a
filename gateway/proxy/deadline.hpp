// One deadline per connection, cheap to move: `expires_after` stores a time and nothing
// else. One timer, armed when none is or when the new time is earlier, re-arms itself when
// it fires early and acts on the socket once the time has passed: it cancels the socket's
// operations (their owner then checks fired()) or closes the socket (any operation under way
// or to come fails), as beast::tcp_stream does on a timeout. tcp_stream instead arms and
// cancels a timer around every read and write, a heap operation and a lock each.
//
// The deadline runs whether or not an operation is under way: whoever sets one clears it
// (expires_never) once the operation it guards has completed.
#pragma once
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <memory>

namespace gw {

class Deadline {
 public:
  using Clock = std::chrono::steady_clock;
  enum class Action { cancel, close };

  Deadline(boost::asio::ip::tcp::socket& socket, Action action);
  ~Deadline();
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;

  void expires_after(Clock::duration d) { set(Clock::now() + d); }
  void expires_never() { state_->at = Clock::time_point::max(); }
  // The time passed while set, since the last expires_after.
  bool fired() const { return state_->fired; }

 private:
  // Shared with the timer's handler, which may run after the connection is gone.
  struct State {
    Clock::time_point at = Clock::time_point::max();
    Deadline* owner = nullptr;  // null once the deadline is destroyed
    bool armed = false;
    bool fired = false;
  };

  void set(Clock::time_point at);
  void arm();

  boost::asio::ip::tcp::socket& socket_;
  Action action_;
  boost::asio::steady_timer timer_;
  std::shared_ptr<State> state_;
};

}  // namespace gw
