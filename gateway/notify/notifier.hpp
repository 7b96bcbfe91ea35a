// Connection health events (SPEC 6.10): each change of a connection's state is POSTed once,
// as JSON signed with notify.secret (X-Gateway-Signature: sha256=HEX), and retried with
// backoff for an hour. With the redis store one replica sends each event: the event's id is
// made of what every replica agrees on (connection, event, previous state, credential
// version), and a replica sends only the events it claims first. Deliveries run on a thread
// of their own, so a slow receiver never holds up a request.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ssl/context.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "gateway/auth/credential.hpp"
#include "gateway/config/config.hpp"

namespace gw {

struct HealthEvent {
  std::string event;  // needs_reauth | degraded | recovered | connected | deleted
  std::string connection, integration, state, previous_state;
  std::string reason;         // the last error, as the admin API shows it (never a secret)
  std::uint64_t version = 0;  // the credential version the change is about
};

// `event` about `c`, which went from `previous` to `state`; its reason is `c`'s last error.
HealthEvent health_event_of(const Connection& c, std::string event, std::string state,
                            std::string previous, std::uint64_t version);

// The event's id: the same on every replica that sees the same change.
std::string health_event_id(const HealthEvent& e);
// The body POSTed for `e` (SPEC 6.10), with `at` as the event's time.
std::string health_event_body(const HealthEvent& e, const std::string& id, const std::string& at);

struct NotifierParts {
  std::function<NotifyConfig()> config;  // the one current when an event happens
  // Trust for https receivers (the upstream trust store).
  std::function<std::shared_ptr<boost::asio::ssl::context>()> tls;
  // True when this replica sends the event (the redis store's SET NX); absent: always.
  std::function<boost::asio::awaitable<bool>(std::string id)> claim;
  Millis first_retry{1000}, last_retry{300'000}, give_up_after{3'600'000};
  Millis timeout{10'000};  // per delivery attempt
};

class Notifier {
 public:
  explicit Notifier(NotifierParts parts);
  ~Notifier();  // stop()
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;
  // Queues `e` when notify.events wants it; returns at once, from any thread.
  void send(HealthEvent e);
  // Abandons deliveries still retrying and stops the thread.
  void stop();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace gw
