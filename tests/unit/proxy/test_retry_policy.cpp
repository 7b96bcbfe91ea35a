#include <doctest/doctest.h>

#include "gateway/proxy/retry_policy.hpp"

using namespace gw;

TEST_CASE("stale connection: an idempotent request goes again once") {
  RetryPolicy r(ReplayMode::all, "GET");
  // reused, nothing_received, body_read, body_kept
  CHECK(r.may_retry_stale(true, true, true, true));
  CHECK_FALSE(r.may_retry_stale(false, true, true, true));  // a fresh connection failed
  CHECK_FALSE(r.may_retry_stale(true, false, true, true));  // part of an answer came
  CHECK_FALSE(r.may_retry_stale(true, true, false, true));  // the body is not all read
  CHECK_FALSE(r.may_retry_stale(true, true, true, false));  // the body was not kept whole
  r.add_stale_retry();
  CHECK_FALSE(r.may_retry_stale(true, true, true, true));
}

TEST_CASE("stale connection: a non-idempotent request never goes again") {
  for (auto mode : {ReplayMode::all, ReplayMode::idempotent}) {
    RetryPolicy post(mode, "POST");
    CHECK_FALSE(post.may_retry_stale(true, true, true, true));
    RetryPolicy patch(mode, "PATCH");
    CHECK_FALSE(patch.may_retry_stale(true, true, true, true));
  }
  for (const char* method : {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}) {
    CAPTURE(method);
    CHECK(RetryPolicy(ReplayMode::idempotent, method).may_retry_stale(true, true, true, true));
  }
}

TEST_CASE("token rejection: replayed once, per the policy's replay mode") {
  RetryPolicy r(ReplayMode::all, "POST");
  CHECK(r.first_attempt());
  CHECK_FALSE(r.replayed());
  CHECK(r.may_replay(true));
  CHECK_FALSE(r.may_replay(false));  // the body was not kept whole
  r.add_replay();
  CHECK_FALSE(r.first_attempt());
  CHECK(r.replayed());
  CHECK_FALSE(r.may_replay(true));

  CHECK_FALSE(RetryPolicy(ReplayMode::idempotent, "POST").may_replay(true));
  CHECK(RetryPolicy(ReplayMode::idempotent, "GET").may_replay(true));
  CHECK_FALSE(RetryPolicy(ReplayMode::idempotent, "GET").may_replay(false));
}

TEST_CASE("the two retries are counted apart") {
  RetryPolicy r(ReplayMode::all, "GET");
  r.add_replay();
  CHECK(r.may_retry_stale(true, true, true, true));  // the replay may still meet a stale one
  r.add_stale_retry();
  CHECK_FALSE(r.may_retry_stale(true, true, true, true));

  RetryPolicy s(ReplayMode::all, "GET");
  s.add_stale_retry();
  CHECK(s.first_attempt());
  CHECK(s.may_replay(true));  // a stale retry does not use up the token replay
}
