// TLS session resumption for vendor connections (TLS 1.3 tickets and TLS 1.2 session ids).
//
// A reconnect to a host the process has spoken to offers the newest session that host gave,
// so the vendor can skip the certificate exchange and the chain is not verified again: what
// nginx and haproxy do. The sessions live in a small cache attached to the client TLS context
// itself, so they go with it: a reload that changes the trust store builds a new context and
// starts with none, and no session verified under the old anchors is offered again.
//
// A session is offered for at most an hour after the full handshake that verified the chain
// it carries; then the next connection verifies the chain again.
//
// Safe across event loops: the cache is locked for its few lookups (one per new connection,
// one per ticket received); an SSL_SESSION is reference counted and read-only once issued.
// OpenSSL's own client cache stays off (it only grows: see make_client_tls).
#pragma once
#include <openssl/ssl.h>

#include <string>

namespace gw::tls_sessions {

// Gives `ctx` its cache and the callback that fills it. Call once, before the context is shared.
void attach(SSL_CTX* ctx);
// Before a handshake: ties `ssl` to `host_key` (host, port and SNI name) and offers the newest
// live session saved for it, if any.
void prepare(SSL* ssl, const std::string& host_key);
// After a failed handshake: the host's saved session is dropped (it may be what failed).
void forget(SSL* ssl);

}  // namespace gw::tls_sessions
