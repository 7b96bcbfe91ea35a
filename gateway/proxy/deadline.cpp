#include "gateway/proxy/deadline.hpp"

namespace gw {

Deadline::Deadline(boost::asio::ip::tcp::socket& socket, Action action)
    : socket_(socket),
      action_(action),
      timer_(socket.get_executor()),
      state_(std::make_shared<State>()) {
  state_->owner = this;
}

Deadline::~Deadline() {
  state_->owner = nullptr;
}

void Deadline::set(Clock::time_point at) {
  state_->at = at;
  state_->fired = false;
  if (!state_->armed || at < timer_.expiry()) arm();
}

void Deadline::arm() {
  state_->armed = true;
  timer_.expires_at(state_->at);  // cancels a wait for a later time
  timer_.async_wait([s = state_](boost::system::error_code ec) {
    if (ec == boost::asio::error::operation_aborted || !s->owner) return;
    s->armed = false;
    if (s->at == Clock::time_point::max()) return;  // cleared since
    if (Clock::now() < s->at) {
      s->owner->arm();  // moved on since this wait began
      return;
    }
    s->fired = true;
    boost::system::error_code ignored;
    if (s->owner->action_ == Action::close)
      s->owner->socket_.close(ignored);
    else
      s->owner->socket_.cancel(ignored);
  });
}

}  // namespace gw
