// A connection's credential and state in the stored form (TokenRecord), and back.
#include "gateway/auth/token_cache.hpp"

namespace gw {

namespace {

std::int64_t to_ms(Clock::time_point t) {
  if (t == Clock::time_point::max()) return 0;
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

Clock::time_point from_ms(std::int64_t ms) {
  if (ms == 0) return Clock::time_point::max();
  return Clock::time_point(
      std::chrono::duration_cast<Clock::duration>(std::chrono::milliseconds(ms)));
}

}  // namespace

TokenRecord make_record(const Connection& c, const Credential* cred) {
  TokenRecord r;
  r.id = c.id;
  r.integration = c.integration;
  r.grant = c.grant;
  r.vars = c.vars;
  r.created_at_runtime = c.created_at_runtime;
  if (cred) {
    r.access_token = cred->access_token;
    r.refresh_token = cred->refresh_token;
    r.issued_at_ms = to_ms(cred->issued_at);
    r.expires_at_ms = cred->expires_at == Clock::time_point::min() ? 1 : to_ms(cred->expires_at);
    r.version = cred->version;
  }
  std::lock_guard lock(c.lifecycle->mutex);
  r.state = state_name(c.lifecycle->state);
  r.last_error = c.lifecycle->last_error;
  return r;
}

void restore_record(Connection& c, const TokenRecord& r) {
  if (auto cred = make_credential(
          c, {r.access_token, r.refresh_token, from_ms(r.issued_at_ms),
              r.access_token.empty() ? Clock::time_point::min() : from_ms(r.expires_at_ms),
              r.version}))
    c.publish(std::move(cred));
  std::lock_guard lock(c.lifecycle->mutex);
  if (r.state == "needs_reauth") {
    c.lifecycle->state = ConnectionState::needs_reauth;
    c.lifecycle->needs_reauth = true;
    c.lifecycle->last_error = r.last_error;
  } else {
    c.lifecycle->state = ConnectionState::ready;
    c.lifecycle->needs_reauth = false;
  }
}

}  // namespace gw
