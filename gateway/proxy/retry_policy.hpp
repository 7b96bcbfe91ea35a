// Whether one request may go to the vendor again (STYLE: nghttp2's Downstream::add_retry /
// no_more_retry). Two retries, each at most once and counted apart:
// - stale connection: the vendor closed a pooled connection as it was reused, before a byte
//   of an answer came; the request goes again on a fresh connection. Idempotent methods
//   only: a silent close does not prove the request was not applied, so a POST never goes
//   again whatever the policy's `replay` says.
// - token rejection: the vendor answered with one of the policy's reauth_on statuses; the
//   answer is dropped and the request replayed with a renewed token, for the methods the
//   policy's `replay` allows.
// Both need the caller's body read to its end and kept whole. Plain values in, so unit tests
// reach each condition without a socket.
#pragma once
#include <string_view>

#include "gateway/policy/policy.hpp"
#include "gateway/proxy/request_rules.hpp"

namespace gw {

class RetryPolicy {
 public:
  // For a request sent with `method` (which must outlive the policy) under `replay`.
  RetryPolicy(ReplayMode replay, std::string_view method)
      : method_(method), replayable_(replay == ReplayMode::all || is_idempotent(method)) {}

  // True when an attempt that failed this way may go again on a fresh connection.
  bool may_retry_stale(bool reused, bool nothing_received, bool body_read, bool body_kept) const {
    return reused && !stale_retried_ && is_idempotent(method_) && body_read && body_kept &&
           nothing_received;
  }

  // Uses up the stale-connection retry.
  void add_stale_retry() { stale_retried_ = true; }

  // True until the token replay happened: the attempt under way is the first with a token.
  bool first_attempt() const { return !replayed_; }

  // True when an answer rejecting the token may be dropped and the request replayed.
  bool may_replay(bool body_kept) const { return !replayed_ && replayable_ && body_kept; }

  // Uses up the token replay: the attempt that follows is the last.
  void add_replay() { replayed_ = true; }

  // True once the token replay happened: the attempt under way is the last.
  bool replayed() const { return replayed_; }

 private:
  std::string_view method_;
  bool replayable_;
  bool stale_retried_ = false;
  bool replayed_ = false;
};

}  // namespace gw
