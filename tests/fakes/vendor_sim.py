#!/usr/bin/env python3
"""Vendor simulators for the gateway's tests: Chime, Zendesk Chat, Chip and Comm100.

One HTTPS server per vendor on 127.0.0.1 (port 0 by default), with the certificate the
test made. Each checks credentials exactly as the vendor's document in shared/seeds says:

  chime    API: Authorization: Bearer. Token: POST /api/user-web/oauth/token, client
           authenticated with HTTP Basic, form body; authorize page takes clientId, no state.
  zendesk  API: Authorization: Bearer. Token: POST /oauth2/chat/token, client_id and
           client_secret in the form body; answers carry no expires_in.
  chip     API: access_token query parameter; an expired or revoked token gets 419, an
           unknown one 401. Token: GET /oauth/token and GET /oauth/refresh, all in the query.
  comm100  API: Authorization: Bearer, or Basic email:api_key. Token: POST /oauth/token
           (authorization_code, client_credentials with siteId, password with email,
           refresh_token) and POST /partner/oauth/token (password). Errors are {code, message}.

Knobs and counters live under /_sim/ (no credentials needed):
  GET  /_sim/state              counters: connections, requests, token_requests, ...
  GET  /_sim/requests           the recorded API requests (method, path, query, headers, body)
  POST /_sim/config             JSON: token_lifetime, rotate_refresh, omit_expires_in,
                                fail_token {count, status, body}, delay_ms, token_delay_ms,
                                answer_delay_ms (a refresh token is redeemed, then the answer
                                waits: the moment a test faults the gateway's store; counter
                                refresh_redeemed),
                                stray (bodies written after HEAD and 204 answers anyway, and
                                a whole fake answer after them, as a broken vendor would)
  POST /_sim/revoke             revokes every access token issued so far
  POST /_sim/reset              clears the recorded requests and counters
  POST /_sim/tokens             JSON {access_token?, refresh_token?, lifetime?}: registers them
  POST /_sim/rate_limit         JSON {count, status, retry_after}: the next `count` authorized API
                                calls get `status` (429) with that Retry-After (counter rate_limited)

Other API paths answer 200 with a JSON echo (with the X-Request-Id it got); a path ending in
/not-yours answers 401 with any token, one ending in /no-content answers 204. Special paths: /download?bytes=N streams N
deterministic bytes; any request body is hashed (sha256) and its length reported.
Prints {"port": N} on stdout once listening.
"""
import argparse
import base64
import hashlib
import html
import json
import secrets
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 64 * 1024


class State:
    def __init__(self, args):
        self.lock = threading.Lock()
        self.vendor = args.vendor
        self.client_id = args.client_id
        self.client_secret = args.client_secret
        self.redirect_uri = args.redirect_uri
        self.token_lifetime = args.token_lifetime
        self.rotate_refresh = args.rotate_refresh
        self.require_pkce = args.require_pkce
        self.json_token = args.json_token
        self.token_headers = [h.partition(":")[::2] for h in args.token_header]
        self.omit_expires_in = args.vendor == "zendesk"
        self.fail_token = None  # {"count": n, "status": s, "body": {...}}
        self.delay_ms = 0
        self.token_delay_ms = 0
        self.answer_delay_ms = 0
        self.stray = False  # write past bodiless answers (HEAD, 204): the cross-caller fault
        self.token_shape = None  # nested | expires_at | ms: where the token answer keeps its fields
        self.rate_limit = None  # {"count": n, "status": 429, "retry_after": "3"}: the next n API calls
        self.access = {}  # token -> {"expires": t or None, "revoked": bool}
        self.refresh = {}  # token -> {"used": bool}
        self.codes = {}  # code -> {"redirect_uri":..., "state":..., "used": bool}
        self.users = {}  # email -> password (comm100 password grant)
        self.api_keys = {}  # email -> api key (comm100)
        self.counters = {"connections": 0, "requests": 0, "api_requests": 0,
                         "token_requests": 0, "rejected": 0, "api_connections": 0, "refresh_reuse": 0,
                         "invalid_grant": 0, "rate_limited": 0, "pkce_verified": 0, "refresh_redeemed": 0,
                         "json_token_requests": 0}
        self.recorded = []
        for spec in args.seed_token or []:
            self.access[spec] = {"expires": None, "revoked": False}
        for spec in args.seed_refresh or []:
            self.refresh[spec] = {"used": False}
        for spec in args.user or []:
            email, _, password = spec.partition(":")
            self.users[email] = password
        for spec in args.api_key or []:
            email, _, key = spec.partition(":")
            self.api_keys[email] = key

    def count(self, name, n=1):
        with self.lock:
            self.counters[name] = self.counters.get(name, 0) + n

    def issue(self):
        """Mints an access token (and refresh token) and returns the token answer."""
        with self.lock:
            access = "at-" + secrets.token_hex(16)
            refresh = "rt-" + secrets.token_hex(16)
            expires = time.time() + self.token_lifetime if self.token_lifetime else None
            self.access[access] = {"expires": expires, "revoked": False}
            self.refresh[refresh] = {"used": False}
        answer = {"access_token": access, "token_type": "Bearer", "refresh_token": refresh}
        if self.vendor == "chime":
            answer["scope"] = "openApi"
        elif self.vendor == "zendesk":
            answer["scope"] = "read write"
        elif self.vendor == "chip":
            answer["scope"] = "*"
        if not self.omit_expires_in and self.token_lifetime:
            answer["expires_in"] = int(self.token_lifetime)
        return answer

    def shape(self, answer):
        """A token answer shaped as other vendors shape theirs (SPEC 4 token_response)."""
        if self.token_shape == "nested":  # Slack's authed_user
            fields = ("access_token", "refresh_token", "expires_in")
            inner = {k: answer[k] for k in fields if k in answer}
            return dict({k: v for k, v in answer.items() if k not in fields},
                        ok=True, authed_user=inner)
        if self.token_shape == "expires_at" and "expires_in" in answer:
            answer = dict(answer)
            answer["expires_at"] = int(time.time()) + answer.pop("expires_in")
        if self.token_shape == "ms" and "expires_in" in answer:
            answer = dict(answer, expires_in=answer["expires_in"] * 1000)
        return answer

    def access_status(self, token):
        """'ok', 'expired' (also revoked) or 'unknown'."""
        with self.lock:
            info = self.access.get(token)
            if info is None:
                return "unknown"
            if info["revoked"] or (info["expires"] is not None and info["expires"] < time.time()):
                return "expired"
            return "ok"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "VendorSim/1.0"

    def log_message(self, fmt, *args):  # quiet: the tests read the counters instead
        pass

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle and delayed ACKs
        # add 40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.state.count("connections")
        self.api_served = False

    @property
    def state(self):
        return self.server.state

    # ---------------------------------------------------------------- plumbing
    def read_body(self):
        """Reads a Content-Length or chunked body; returns (bytes or None, sha256, length).
        Bodies over 1 MiB are hashed as they stream and not kept."""
        digest = hashlib.sha256()
        kept = bytearray()
        total = 0
        keep = True

        def take(data):
            nonlocal total, keep
            digest.update(data)
            total += len(data)
            if keep:
                if len(kept) + len(data) <= 1024 * 1024:
                    kept.extend(data)
                else:
                    keep = False
                    kept.clear()

        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                remaining = size
                while remaining:
                    data = self.rfile.read(min(CHUNK, remaining))
                    if not data:
                        raise ConnectionError("body cut short")
                    take(data)
                    remaining -= len(data)
                self.rfile.readline(16)
        else:
            remaining = int(self.headers.get("Content-Length", "0") or "0")
            while remaining:
                data = self.rfile.read(min(CHUNK, remaining))
                if not data:
                    raise ConnectionError("body cut short")
                take(data)
                remaining -= len(data)
        return (bytes(kept) if keep else None), digest.hexdigest(), total

    def send_json(self, status, obj, headers=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        elif self.state.stray:
            self.wfile.write(data + self.stray_answer())

    def stray_answer(self):
        """A whole answer nobody asked for: the next caller must never receive it."""
        fake = json.dumps({"vendor": self.state.vendor, "request_id": "stolen-" +
                           secrets.token_hex(4), "authorized": True}).encode()
        return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d"
                b"\r\n\r\n%s" % (len(fake), fake))

    def send_bare(self, status):
        """Chip's style: most errors carry only the status code."""
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def send_html(self, status, text):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def handle_any(self):
        self.state.count("requests")
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        try:
            body, body_sha, body_len = self.read_body()
        except (ConnectionError, ValueError):
            self.close_connection = True
            return
        if url.path.startswith("/_sim/"):
            return self.control(url.path, body)
        if self.state.delay_ms:
            time.sleep(self.state.delay_ms / 1000)
        route = self.oauth_route(url.path)
        if route:
            return route(query, body)
        return self.api(url, query, body, body_sha, body_len)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any

    # ---------------------------------------------------------------- control
    def control(self, path, body):
        st = self.state
        if path == "/_sim/state":
            with st.lock:
                snapshot = dict(st.counters)
                snapshot["valid_refresh_tokens"] = sum(1 for r in st.refresh.values() if not r["used"])
            return self.send_json(200, snapshot)
        if path == "/_sim/requests":
            with st.lock:
                return self.send_json(200, list(st.recorded))
        if path == "/_sim/reset":
            with st.lock:
                st.recorded.clear()
                for k in st.counters:
                    st.counters[k] = 0
            return self.send_json(200, {"ok": True})
        if path == "/_sim/revoke":
            with st.lock:
                for info in st.access.values():
                    info["revoked"] = True
            return self.send_json(200, {"ok": True})
        if path == "/_sim/forget":  # tokens become unknown (Chip then answers 401, not 419)
            with st.lock:
                st.access.clear()
            return self.send_json(200, {"ok": True})
        if path == "/_sim/config":
            cfg = json.loads(body or b"{}")
            with st.lock:
                for key in ("token_lifetime", "rotate_refresh", "omit_expires_in", "fail_token",
                            "delay_ms", "token_delay_ms", "answer_delay_ms", "redirect_uri", "stray",
                            "token_shape"):
                    if key in cfg:
                        setattr(st, key, cfg[key])
            return self.send_json(200, {"ok": True})
        if path == "/_sim/rate_limit":  # the next `count` authorized API calls are refused
            cfg = json.loads(body or b"{}")
            with st.lock:
                st.rate_limit = {"count": int(cfg.get("count", 1)), "status": int(cfg.get("status", 429)),
                                 "retry_after": str(cfg.get("retry_after", "3"))}
            return self.send_json(200, {"ok": True})
        if path == "/_sim/tokens":
            cfg = json.loads(body or b"{}")
            lifetime = cfg.get("lifetime")
            with st.lock:
                if cfg.get("access_token"):
                    st.access[cfg["access_token"]] = {
                        "expires": time.time() + lifetime if lifetime else None, "revoked": False}
                if cfg.get("refresh_token"):
                    st.refresh[cfg["refresh_token"]] = {"used": False}
            return self.send_json(200, {"ok": True})
        return self.send_json(404, {"error": "no such control"})

    # ---------------------------------------------------------------- API
    def record(self, url, body_sha, body_len):
        entry = {"method": self.command, "path": url.path, "query": url.query,
                 "headers": [[k, v] for k, v in self.headers.items()],
                 "body_sha256": body_sha, "body_len": body_len,
                 "connection": id(self.connection)}
        with self.state.lock:
            self.state.recorded.append(entry)
            del self.state.recorded[:-500]

    def api(self, url, query, body, body_sha, body_len):
        st = self.state
        st.count("api_requests")
        if not self.api_served:  # connections that carried API traffic (pooling tests)
            self.api_served = True
            st.count("api_connections")
        self.record(url, body_sha, body_len)
        auth = self.headers.get("Authorization", "")
        verdict = self.check_api_credential(auth, query)
        if verdict is not None:
            st.count("rejected")
            status, payload = verdict
            if payload is None:
                return self.send_bare(status)
            return self.send_json(status, payload)
        with st.lock:
            limited = dict(st.rate_limit) if st.rate_limit and st.rate_limit["count"] > 0 else None
            if limited:
                st.rate_limit["count"] -= 1
        if limited:
            st.count("rate_limited")
            return self.send_json(limited["status"], {"error": "rate limited"},
                                  headers={"Retry-After": limited["retry_after"]})
        if url.path.endswith("/no-content"):
            stray = self.stray_answer() if self.state.stray else b""
            self.send_response(204)
            if stray:
                self.send_header("Content-Length", str(len(stray)))
            self.end_headers()
            self.wfile.write(stray)
            return
        if url.path.endswith("/not-yours"):
            # An endpoint this account may not use: 401 whatever the token (no storm of
            # refreshes may follow, issue 13.10).
            return self.send_json(401, {"error": "not permitted"})
        if url.path == "/download":
            return self.download(int(query.get("bytes", ["0"])[0]))
        if url.path == "/redirect":
            # A vendor answer that carries the caller's credential back (must be redacted).
            token = query.get("access_token", [""])[0] or auth.partition(" ")[2]
            self.send_response(302)
            self.send_header("Location", "https://vendor.example/next?access_token=" + token)
            self.send_header("X-Echo-Auth", auth)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        # The echo never repeats the credential (the recorded requests have it for tests).
        shown = [(k, "(valid)" if k == "access_token" else v)
                 for k, v in urllib.parse.parse_qsl(url.query, keep_blank_values=True)]
        echo = {"vendor": st.vendor, "method": self.command, "path": url.path,
                "query": urllib.parse.urlencode(shown), "authorized": True,
                "request_id": self.headers.get("X-Request-Id", ""),
                "body_sha256": body_sha, "body_len": body_len}
        self.send_json(200, echo)

    def download(self, size):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if self.command == "HEAD":
            return
        block = hashlib.sha256(b"download").digest() * (CHUNK // 32)
        remaining = size
        while remaining:
            n = min(len(block), remaining)
            self.wfile.write(block[:n])
            remaining -= n

    def check_api_credential(self, auth, query):
        """None when the request carries a valid credential, else (status, json or None)."""
        st = self.state
        v = st.vendor
        if v == "chip":
            tokens = query.get("access_token", [])
            if len(tokens) != 1:
                return 401, None
            status = st.access_status(tokens[0])
            if status == "ok":
                return None
            return (419, None) if status == "expired" else (401, None)
        scheme, _, value = auth.partition(" ")
        if v == "comm100" and scheme == "Basic":
            try:
                email, _, key = base64.b64decode(value, validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return 401, {"code": 401000, "message": "Malformed basic authorization."}
            if email in st.api_keys and secrets.compare_digest(st.api_keys[email], key):
                return None
            return 401, {"code": 401000, "message": "The email or API key is invalid."}
        if scheme != "Bearer" or not value:
            return self.unauthorized()
        if st.access_status(value) == "ok":
            return None
        return self.unauthorized()

    def unauthorized(self):
        if self.state.vendor == "comm100":
            return 401, {"code": 401000, "message": "Unauthorized."}
        return 401, {"error": "invalid_token", "error_description": "The access token is invalid"}

    # ---------------------------------------------------------------- OAuth
    def oauth_route(self, path):
        v = self.state.vendor
        routes = {
            "chime": {"/api/user-web/oauth/token": self.token_chime,
                      "/page/vendor-auth.html": self.consent},
            "zendesk": {"/oauth2/chat/token": self.token_form,
                        "/oauth2/chat/authorizations/new": self.consent},
            "chip": {"/oauth/token": self.token_chip, "/oauth/refresh": self.token_chip,
                     "/oauth": self.consent},
            "comm100": {"/oauth/token": self.token_form, "/partner/oauth/token": self.token_partner,
                        "/oauth/authorize": self.consent},
        }[v]
        if path == "/_consent":
            return self.consent_decision
        return routes.get(path)

    def consent(self, query, body):
        """The vendor's login + consent page: an Allow and a Deny button."""
        st = self.state
        client = (query.get("clientId") or query.get("client_id") or [""])[0]
        if client != st.client_id:
            return self.send_html(400, "<p>unknown client</p>")
        redirect = (query.get("redirect_uri") or [st.redirect_uri])[0]
        state = (query.get("state") or [""])[0]
        challenge = (query.get("code_challenge") or [""])[0]
        method = (query.get("code_challenge_method") or [""])[0]
        if st.require_pkce and (not challenge or method != "S256"):
            # What a strict OAuth 2.1 server answers (RFC 7636 4.4.1).
            sep = "&" if "?" in redirect else "?"
            return self.redirect(redirect + sep + urllib.parse.urlencode(
                {"error": "invalid_request", "error_description": "requires PKCE (S256)",
                 "state": state}))
        fields = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(val)}">'
            for k, val in (("redirect_uri", redirect), ("state", state), ("code_challenge", challenge)))
        page = (f"<html><body><h1>{st.vendor}: allow access?</h1>"
                f'<form method="GET" action="/_consent">{fields}'
                '<button id="allow" name="decision" value="allow">Allow</button>'
                '<button id="deny" name="decision" value="deny">Deny</button>'
                "</form></body></html>")
        self.send_html(200, page)

    def consent_decision(self, query, body):
        st = self.state
        redirect = query.get("redirect_uri", [st.redirect_uri])[0]
        state = query.get("state", [""])[0]
        params = {}
        if query.get("decision", [""])[0] == "allow":
            code = "code-" + secrets.token_hex(12)
            with st.lock:
                st.codes[code] = {"redirect_uri": redirect, "state": state, "used": False,
                                  "challenge": query.get("code_challenge", [""])[0]}
            params["code"] = code
        else:
            params["error"] = "access_denied"
        if state and st.vendor != "chime":  # Chime sends no state back
            params["state"] = state
        sep = "&" if "?" in redirect else "?"
        self.redirect(redirect + sep + urllib.parse.urlencode(params))

    def token_failure(self):
        """Counts a token request and applies the fail_token knob; True when it answered."""
        st = self.state
        st.count("token_requests")
        with st.lock:
            fail = st.fail_token
            if fail and fail.get("count", 0) > 0:
                fail["count"] -= 1
            else:
                fail = None
        if not fail:
            return False
        status = fail.get("status", 500)
        if fail.get("hang"):
            time.sleep(fail["hang"])
        if fail.get("body") is not None:
            self.send_json(status, fail["body"])
        else:
            self.send_bare(status)
        return True

    def grant(self, params, client_ok):
        """Shared grant logic. Returns (status, answer)."""
        st = self.state
        if st.token_delay_ms and not self.wait_for_client(st.token_delay_ms / 1000):
            # A slow token endpoint whose caller hung up before it committed: nothing is
            # redeemed (the request never "arrived" in full at the vendor's backend).
            st.count("token_requests_abandoned")
            self.close_connection = True
            return 499, None
        if not client_ok:
            return 401, {"error": "invalid_client"}
        grant_type = params.get("grant_type", "")
        if grant_type == "authorization_code":
            code = params.get("code", "")
            with st.lock:
                info = st.codes.get(code)
                ok = info and not info["used"] and info["redirect_uri"] == params.get("redirect_uri")
                if ok:
                    info["used"] = True
            if not ok:
                st.count("invalid_grant")
                return 400, {"error": "invalid_grant"}
            if info["challenge"] or st.require_pkce:
                verifier = params.get("code_verifier", "")
                digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
                if not verifier or digest.rstrip(b"=").decode() != info["challenge"]:
                    st.count("invalid_grant")
                    return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
                st.count("pkce_verified")
            if st.vendor == "chip" and params.get("state") != info["state"]:
                return 401, None
            return 200, st.issue()
        if grant_type == "refresh_token":
            rt = params.get("refresh_token", "")
            with st.lock:
                info = st.refresh.get(rt)
                ok = info is not None and not info["used"]
                if ok and st.rotate_refresh:
                    info["used"] = True
                if info is not None and not ok:
                    st.counters["refresh_reuse"] += 1
            if not ok:
                st.count("invalid_grant")
                return 400, {"error": "invalid_grant"}
            answer = st.issue()
            st.count("refresh_redeemed")
            if st.answer_delay_ms:
                time.sleep(st.answer_delay_ms / 1000)
            if not st.rotate_refresh:
                with st.lock:
                    del st.refresh[answer["refresh_token"]]
                del answer["refresh_token"]  # the old one stays valid
            return 200, answer
        if grant_type == "client_credentials" and st.vendor in ("zendesk", "comm100"):
            if st.vendor == "comm100" and not params.get("siteId"):
                return 400, {"error": "invalid_request", "error_description": "siteId is required"}
            answer = st.issue()
            answer.pop("refresh_token")
            return 200, answer
        if grant_type == "password" and st.vendor == "comm100":
            email, password = params.get("email", ""), params.get("password", "")
            if email in st.users and secrets.compare_digest(st.users[email], password):
                return 200, st.issue()
            st.count("invalid_grant")
            return 400, {"error": "invalid_grant"}
        return 400, {"error": "unsupported_grant_type"}

    def wait_for_client(self, seconds):
        """Sleeps `seconds`; False as soon as the client closes its connection."""
        import select
        deadline = time.time() + seconds
        while True:
            left = deadline - time.time()
            if left <= 0:
                return True
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
            if readable:
                try:
                    if self.connection.recv(1, socket.MSG_PEEK) == b"":
                        return False
                except (ssl.SSLWantReadError, BlockingIOError):
                    pass
                except OSError:
                    return False
                except ValueError:  # SSL sockets refuse flags: peek at the raw socket
                    raw = socket.socket(fileno=self.connection.fileno())
                    try:
                        if raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                            return False
                    except BlockingIOError:
                        pass
                    except OSError:
                        return False
                    finally:
                        raw.detach()

    def form(self, body):
        kind = self.headers.get("Content-Type", "").split(";")[0].strip()
        if self.state.json_token:  # a JSON object of strings, nothing else
            if kind != "application/json":
                return None
            try:
                obj = json.loads(body or b"")
            except ValueError:
                return None
            if not isinstance(obj, dict) or not all(isinstance(v, str) for v in obj.values()):
                return None
            self.state.count("json_token_requests")
            return obj
        if kind != "application/x-www-form-urlencoded":
            return None
        return {k: v[0] for k, v in urllib.parse.parse_qs((body or b"").decode(),
                                                          keep_blank_values=True).items()}

    def reply(self, status, answer):
        if status == 200 and isinstance(answer, dict) and "access_token" in answer:
            answer = self.state.shape(answer)
        if answer is None:
            return self.send_bare(status)
        if self.state.vendor == "comm100" and status >= 400:
            answer = {"code": status * 1000, "message": answer.get("error", "error")}
        self.send_json(status, answer, {"Cache-Control": "no-store"})

    def posted_form(self, body):
        """The prologue of a POST token endpoint: method, fail_token knob, form body.
        Returns the parameters, or None when it already answered."""
        if self.command != "POST":
            self.send_json(405, {"error": "method_not_allowed"})
            return None
        if self.token_failure():
            return None
        for name, value in self.state.token_headers:
            if not secrets.compare_digest(self.headers.get(name, ""), value):
                self.send_json(401, {"error": "invalid_client", "error_description": "missing " + name})
                return None
        params = self.form(body)
        if params is None:
            self.send_json(400, {"error": "invalid_request"})
        return params

    def client_matches(self, client_id, client_secret):
        return client_id == self.state.client_id and secrets.compare_digest(
            client_secret or "", self.state.client_secret)

    def token_chime(self, query, body):
        params = self.posted_form(body)
        if params is None:
            return
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        client_ok = False
        if scheme == "Basic":
            try:
                cid, _, secret = base64.b64decode(value, validate=True).decode().partition(":")
                client_ok = self.client_matches(cid, secret)
            except (ValueError, UnicodeDecodeError):
                pass
        self.reply(*self.grant(params, client_ok))

    def token_form(self, query, body):
        params = self.posted_form(body)
        if params is None:
            return
        if params.get("grant_type") == "password" and self.state.vendor == "comm100":
            client_ok = True  # the password grant carries no client authentication
        else:
            client_ok = self.client_matches(params.get("client_id"), params.get("client_secret"))
        self.reply(*self.grant(params, client_ok))

    def token_partner(self, query, body):
        params = self.posted_form(body)
        if params is None:
            return
        if params.get("grant_type") != "password":
            return self.reply(400, {"error": "unsupported_grant_type"})
        self.reply(*self.grant(params, True))  # a partner's email and password, no client

    def token_chip(self, query, body):
        if self.command != "GET":
            return self.send_bare(405)
        if self.token_failure():
            return
        params = {k: v[0] for k, v in query.items()}
        client_ok = self.client_matches(params.get("client_id"), params.get("client_secret"))
        status, answer = self.grant(params, client_ok)
        if status == 401:
            answer = None  # Chip answers bad client credentials with a bare 401
        self.reply(status, answer)


class TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, addr, state, context):
        self.state = state
        self.context = context
        super().__init__(addr, Handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def finish_request(self, request, client_address):
        try:
            request.settimeout(30)
            request.do_handshake()
        except (ssl.SSLError, OSError):
            self.state.count("tls_failures")
            request.close()
            return
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        pass  # a client that went away mid-request is normal in these tests


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vendor", required=True, choices=["chime", "zendesk", "chip", "comm100"])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--client-id", default="test-client")
    ap.add_argument("--client-secret", default="test-secret")
    ap.add_argument("--redirect-uri", default="")
    ap.add_argument("--token-lifetime", type=float, default=3600)
    ap.add_argument("--rotate-refresh", action="store_true")
    ap.add_argument("--json-token", action="store_true",
                    help="token endpoints take only a JSON object body (Notion, Figma, Auth0 style)")
    ap.add_argument("--token-header", action="append", default=[],
                    help="NAME:VALUE every token request must carry (else 401 invalid_client)")
    ap.add_argument("--require-pkce", action="store_true",
                    help="authorize needs an S256 code_challenge; the code exchange its verifier")
    ap.add_argument("--seed-token", action="append", help="an access token valid forever")
    ap.add_argument("--seed-refresh", action="append", help="a valid refresh token")
    ap.add_argument("--user", action="append", help="email:password (comm100 password grant)")
    ap.add_argument("--api-key", action="append", help="email:key (comm100 API key)")
    args = ap.parse_args()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server = TLSServer(("127.0.0.1", args.port), State(args), context)
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    socket.setdefaulttimeout(None)
    sys.exit(main())
