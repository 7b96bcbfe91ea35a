"""The token lifecycle through the real binary (SPEC section 6): first tokens from the
config's grants, refresh ahead of expiry, a single shared refresh and a replay when the
vendor rejects a token (401, Chip's 419), failures and their cooldown and backoff."""
import hashlib
import json
import os
import re
import threading
import time
import unittest
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from harness import CA, Gateway, Sim, Workdir, base_config, scan_for_secrets, secret

W = Workdir()
CA_ = CA(W.path)
CERT, KEY = CA_.issue("sim", "IP:127.0.0.1,DNS:localhost")
PASSWORD = secret("pw-" + os.urandom(6).hex())


TOKEN_PATHS = {"chime": "/api/user-web/oauth/token", "zendesk-chat": "/oauth2/chat/token",
               "chip": "/oauth/token", "comm100": "/oauth/token",
               "comm100-partner": "/partner/oauth/token"}


class Env:
    """One simulator and one gateway with one integration."""

    def __init__(self, vendor, policy, connection, sim_args=(), integration_extra=None,
                 refresh=None, name=None, limits=None, store=None):
        self.sim = Sim(vendor, CERT, KEY, "--client-id", "cid", *sim_args)
        cfg = base_config(CA_.cert, W.path)
        cfg["refresh"] = refresh or {"skew": "1s", "timeout": "3s",
                                     "backoff": {"initial": "1s", "max": "4s"},
                                     "failure_cooldown": "30s"}
        cfg["limits"] = limits or {"replay_body_bytes": "1MiB"}
        if store:
            cfg["store"] = store
        urls = {"upstream": self.sim.url, "token_url": self.sim.url + TOKEN_PATHS[policy]}
        if policy == "chip":
            urls["refresh_url"] = self.sim.url + "/oauth/refresh"
        integ = {"name": "api", "policy": policy, "client_id": "cid",
                 "client_secret": self.sim.client_secret, "overrides": urls}
        integ.update(integration_extra or {})
        cfg["integrations"] = [integ]
        connection = dict(connection, integration="api")
        cfg["connections"] = [connection]
        self.gw = Gateway(W.path, cfg, name=name or vendor + "-" + policy).start()

    def close(self):
        self.gw.stop()
        self.sim.stop()
        leaks = scan_for_secrets([self.gw.log_path])
        assert not leaks, "secrets in the gateway's log: %r" % leaks

    def wait_token(self, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(l.get("msg") == "token refreshed" for l in self.gw.json_lines()):
                return
            time.sleep(0.05)
        raise AssertionError("no token obtained:\n" + "".join(self.gw.lines[-10:]))

    def refreshes(self, **match):
        return [l for l in self.gw.json_lines()
                if l.get("msg") in ("token refreshed", "token refresh failed")
                and all(l.get(k) == v for k, v in match.items())]


def seed_refresh():
    return secret("rt-seed-" + os.urandom(8).hex())


class TokenTest(unittest.TestCase):
    def test_first_tokens_from_config_grants(self):
        cases = [
            ("comm100", "comm100", {"grant": "password",
                                    "credentials": {"email": "agent@acme.example", "password": PASSWORD}},
             ["--user", "agent@acme.example:" + PASSWORD], {"vars": {"site_id": "42"}}),
            ("comm100", "comm100", {"grant": "client_credentials"}, [], {"vars": {"site_id": "42"}}),
            ("comm100", "comm100-partner", {"grant": "password",
                                            "credentials": {"email": "p@x.example", "password": PASSWORD}},
             ["--user", "p@x.example:" + PASSWORD], {}),
            ("zendesk", "zendesk-chat", {"grant": "client_credentials", "vars": {"subdomain": "acme"}},
             [], {}),
        ]
        for vendor, policy, conn, args, extra in cases:
            with self.subTest(policy=policy, grant=conn["grant"]):
                env = Env(vendor, policy, dict(conn, id="c"), args, extra,
                          name="first-%s-%s" % (policy, conn["grant"]))
                try:
                    env.wait_token()
                    self.assertEqual(env.sim.state()["token_requests"], 1)
                    self.assertEqual(env.refreshes(trigger="initial", result="ok")[0]["grant"],
                                     conn["grant"])
                    status, _, body = env.gw.request("GET", "/api/livechat/x")
                    self.assertEqual(status, 200, body)
                finally:
                    env.close()

    def test_password_connection_logs_in_again_when_its_refresh_token_dies(self):
        # Issue 16: it answered 503 forever although it holds the password.
        env = Env("comm100", "comm100", {"id": "c", "grant": "password",
                                         "credentials": {"email": "agent@acme.example",
                                                         "password": PASSWORD}},
                  ["--user", "agent@acme.example:" + PASSWORD], {"vars": {"site_id": "42"}},
                  name="relogin")
        try:
            env.wait_token()
            env.sim.control("/_sim/config", {"fail_token": {"count": 1, "status": 400,
                                                            "body": {"error": "invalid_grant"}}})
            env.sim.control("/_sim/revoke", {})
            env.sim.control("/_sim/reset", {})
            status, _, body = env.gw.request("GET", "/api/livechat/x")
            self.assertEqual(status, 200, body)
            self.assertEqual(env.sim.state()["token_requests"], 2)  # refresh refused, then login
            self.assertEqual(env.refreshes(trigger="rejected", result="ok")[0]["grant"], "password")
        finally:
            env.close()

    def test_short_tokens_cause_no_refresh_storm(self):
        # Issue 16 / SPEC 6.1: tokens shorter than refresh.skew refreshed on nearly every
        # request (461 token requests in 20 s); never earlier than half the lifetime now.
        rt = seed_refresh()
        started = time.time()  # no token exists before this
        env = Env("chime", "chime", {"id": "c", "grant": "refresh_token",
                                     "credentials": {"refresh_token": rt}},
                  ["--seed-refresh", rt, "--rotate-refresh", "--token-lifetime", "3"],
                  refresh={"skew": "60s", "timeout": "3s"}, name="short-tokens")
        try:
            env.wait_token()
            c = env.gw.conn()
            statuses = []
            end = time.time() + 20
            while time.time() < end:
                c.request("GET", "/api/v1/leads")
                r = c.getresponse()
                r.read()
                statuses.append(r.status)
            c.close()
            n = env.sim.state()["token_requests"]
            print("\n[measure] 20 s of traffic (%d requests), 3 s tokens, skew 60 s: %d token "
                  "requests" % (len(statuses), n))
            # One per half lifetime (1.5 s) since the first token: 14 for exactly 20 s; the
            # gateway's start before the traffic may add one more window.
            self.assertLessEqual(n, 1 + int((time.time() - started) / 1.5))
            self.assertEqual(statuses.count(200), len(statuses))
        finally:
            env.close()

    def test_refresh_ahead_keeps_callers_clear_of_expiry(self):
        rt = seed_refresh()
        env = Env("chime", "chime", {"id": "c", "grant": "refresh_token",
                                     "credentials": {"refresh_token": rt}},
                  ["--seed-refresh", rt, "--rotate-refresh", "--token-lifetime", "3"])
        try:
            env.wait_token()
            statuses = []
            end = time.time() + 10
            c = env.gw.conn()
            while time.time() < end:
                c.request("GET", "/api/v1/leads")
                r = c.getresponse()
                r.read()
                statuses.append(r.status)
                time.sleep(0.02)
            c.close()
            self.assertEqual(set(statuses), {200})
            ahead = env.refreshes(trigger="ahead", result="ok")
            self.assertGreaterEqual(len(ahead), 3)
            st = env.sim.state()
            self.assertEqual(st["rejected"], 0)
            self.assertEqual(st["invalid_grant"], 0)
            print("\n[measure] %d requests over 10 s with 3 s tokens: %d ahead refreshes, 0 rejected"
                  % (len(statuses), len(ahead)))
        finally:
            env.close()

    def rejection_case(self, vendor, policy, path):
        rt = seed_refresh()
        env = Env(vendor, policy, {"id": "c", "grant": "refresh_token",
                                   "credentials": {"refresh_token": rt}},
                  ["--seed-refresh", rt])
        try:
            env.wait_token()
            self.assertEqual(env.gw.request("GET", path)[0], 200)
            env.sim.control("/_sim/revoke", {})
            env.sim.control("/_sim/reset", {})
            body = os.urandom(512 * 1024)
            status, _, data = env.gw.request("POST", path, body=body)
            self.assertEqual(status, 200, data)
            st = env.sim.state()
            self.assertEqual(st["token_requests"], 1)
            recs = [r for r in env.sim.requests() if r["method"] == "POST"]
            self.assertEqual(len(recs), 2)
            digest = hashlib.sha256(body).hexdigest()
            self.assertEqual([r["body_sha256"] for r in recs], [digest, digest])
            retried = env.gw.wait_lines(lambda l: l.get("type") == "access" and l["retried"])
            self.assertEqual(len(retried), 1)

            # Too large to replay: the caller gets the vendor's answer, the next one works.
            env.sim.control("/_sim/revoke", {})
            status, _, data = env.gw.request("POST", path, body=os.urandom(2 * 1024 * 1024))
            self.assertEqual(status, 419 if vendor == "chip" else 401, data)
            deadline = time.time() + 5
            while time.time() < deadline:
                status = env.gw.request("GET", path)[0]
                if status == 200:
                    break
                time.sleep(0.1)
            self.assertEqual(status, 200)
        finally:
            env.close()

    def test_rejection_401_replays_once(self):
        self.rejection_case("chime", "chime", "/api/v1/leads")

    def test_rejection_chip_419_replays_once(self):
        self.rejection_case("chip", "chip", "/api/me/")

    def test_an_endpoint_that_always_rejects_causes_no_refresh_storm(self):
        # Issue 13.10: a 401 that is about the request, not the token. Before, each of these
        # 20 requests forced a refresh (20 rotations of the refresh token).
        rt = seed_refresh()
        env = Env("chime", "chime", {"id": "c", "grant": "refresh_token",
                                     "credentials": {"refresh_token": rt}},
                  ["--seed-refresh", rt, "--rotate-refresh"])
        try:
            env.wait_token()
            env.sim.control("/_sim/reset", {})
            for _ in range(20):
                self.assertEqual(env.gw.request("GET", "/api/v1/not-yours")[0], 401)
            time.sleep(0.3)
            refreshes = env.sim.state()["token_requests"]
            print("\n[measure] 20 requests to an endpoint that always answers 401: %d token "
                  "requests" % refreshes)
            self.assertLessEqual(refreshes, 1)
            # A real revocation is still refreshed and replayed.
            time.sleep(1.1)
            env.sim.control("/_sim/revoke", {})
            self.assertEqual(env.gw.request("GET", "/api/v1/leads")[0], 200)
        finally:
            env.close()

    def test_chip_401_bad_client_does_not_loop(self):
        rt = seed_refresh()
        env = Env("chip", "chip", {"id": "c", "grant": "refresh_token",
                                   "credentials": {"refresh_token": rt}},
                  ["--seed-refresh", rt])
        try:
            env.wait_token()
            env.sim.control("/_sim/forget", {})
            env.sim.control("/_sim/reset", {})
            # Chip's 401 means bad client credentials, not an expired token: passed through,
            # and no refresh is started.
            for _ in range(5):
                status, _, _ = env.gw.request("GET", "/api/me/")
                self.assertEqual(status, 401)
            time.sleep(0.3)
            st = env.sim.state()
            self.assertEqual(st["token_requests"], 0)
            self.assertEqual(st["api_requests"], 5)
        finally:
            env.close()

    def test_500_concurrent_requests_share_one_refresh(self):
        rt = seed_refresh()
        env = Env("zendesk", "zendesk-chat",
                  {"id": "c", "grant": "refresh_token", "vars": {"subdomain": "acme"},
                   "credentials": {"refresh_token": rt}},
                  ["--seed-refresh", rt, "--rotate-refresh"])
        try:
            env.wait_token()
            env.sim.control("/_sim/revoke", {})
            env.sim.control("/_sim/reset", {})

            def one(_):
                return env.gw.request("GET", "/api/api/v2/chat/chats", timeout=60)[0]

            with ThreadPoolExecutor(max_workers=100) as pool:
                statuses = list(pool.map(one, range(500)))
            self.assertEqual(statuses.count(200), 500, statuses)
            st = env.sim.state()
            self.assertEqual(st["token_requests"], 1)
            self.assertEqual(st["invalid_grant"], 0)
        finally:
            env.close()

    def test_invalid_grant_turns_needs_reauth_and_fails_fast(self):
        rt = seed_refresh()
        env = Env("chime", "chime", {"id": "c", "grant": "refresh_token",
                                     "credentials": {"refresh_token": rt}},
                  ["--seed-refresh", rt])
        try:
            env.wait_token()
            env.sim.control("/_sim/config", {"fail_token": {"count": 100, "status": 400,
                                                            "body": {"error": "invalid_grant"}}})
            env.sim.control("/_sim/revoke", {})
            env.sim.control("/_sim/reset", {})
            status, headers, body = env.gw.request("GET", "/api/v1/leads")
            self.assertEqual(status, 401)  # the vendor's own answer: the refresh failed
            for _ in range(50):
                status, headers, body = env.gw.request("GET", "/api/v1/leads")
                self.assertIn(status, (401, 503))
            time.sleep(0.2)
            start = time.time()
            status, headers, body = env.gw.request("GET", "/api/v1/leads")
            self.assertEqual(headers.get("X-Gateway-Error"), "credential_unavailable", body)
            self.assertLess(time.time() - start, 0.5)
            self.assertIn("needs re-authorization", json.loads(body)["message"])
            self.assertEqual(env.sim.state()["token_requests"], 1)
        finally:
            env.close()

    def test_token_endpoint_down_keeps_valid_token_then_explains(self):
        rt = seed_refresh()
        env = Env("chime", "chime", {"id": "c", "grant": "refresh_token",
                                     "credentials": {"refresh_token": rt}},
                  ["--seed-refresh", rt, "--token-lifetime", "3"])
        try:
            env.wait_token()
            env.sim.control("/_sim/config", {"fail_token": {"count": 1000, "status": 500}})
            env.sim.control("/_sim/reset", {})
            # The current token still serves while valid, even as refreshes fail.
            self.assertEqual(env.gw.request("GET", "/api/v1/leads")[0], 200)
            time.sleep(3.2)
            status, headers, body = env.gw.request("GET", "/api/v1/leads")
            self.assertEqual(status, 503, body)
            self.assertEqual(headers["X-Gateway-Error"], "credential_unavailable")
            self.assertIn("refreshing it is failing", json.loads(body)["message"])
            deadline = time.time() + 3  # the log line is read by another thread
            while time.time() < deadline and not env.refreshes(result="error"):
                time.sleep(0.05)
            self.assertGreaterEqual(len(env.refreshes(result="error")), 1)
            # Retries are spaced by the backoff, not one per request.
            for _ in range(20):
                env.gw.request("GET", "/api/v1/leads")
            self.assertLessEqual(env.sim.state()["token_requests"], 3)
        finally:
            env.close()

    def test_file_store_survives_restarts_and_stays_sealed(self):
        import base64
        import stat
        import subprocess
        from harness import GATEWAY_BIN
        rt = seed_refresh()
        key = base64.b64encode(os.urandom(32)).decode()
        path = os.path.join(W.path, "store-%s.db" % os.urandom(4).hex())
        store = {"kind": "file", "path": path, "key": key}
        env = Env("chime", "chime", {"id": "c", "grant": "refresh_token",
                                     "credentials": {"refresh_token": rt}},
                  ["--seed-refresh", rt, "--rotate-refresh"], store=store, name="filestore")
        try:
            env.wait_token()
            self.assertEqual(env.gw.request("GET", "/api/v1/leads")[0], 200)
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
            # Restart: the rotated refresh token comes from the store, not the stale seed
            # in the config (which the simulator no longer accepts).
            env.gw.stop()
            env.sim.control("/_sim/revoke", {})
            env.gw.lines.clear()
            env.gw.start()
            self.assertEqual(env.gw.request("GET", "/api/v1/leads")[0], 200)
            st = env.sim.state()
            self.assertEqual(st["invalid_grant"], 0)
            with open(path, "rb") as f:
                data = f.read()
            for r in env.sim.requests():
                for k, v in r["headers"]:
                    if k == "Authorization":
                        self.assertNotIn(v.split()[-1].encode(), data)
            self.assertNotIn(rt.encode(), data)
            # A wrong key stops the start (exit 1) and leaves the file as it was.
            env.gw.stop()
            wrong = dict(env.gw.config, store=dict(store, key=base64.b64encode(os.urandom(32)).decode()))
            env.gw.write_config(wrong)
            r = subprocess.run([GATEWAY_BIN, "--config", env.gw.config_path], capture_output=True,
                               text=True, timeout=20)
            self.assertEqual(r.returncode, 1)
            self.assertIn("cannot decrypt the token store", r.stderr)
            with open(path, "rb") as f:
                self.assertEqual(f.read(), data)
            # A previous key still opens it, and the records are sealed again with the new key.
            rotated = dict(env.gw.config, store=dict(wrong["store"], previous_keys=[key]))
            env.gw.write_config(rotated)
            env.gw.start()
            self.assertEqual(env.gw.request("GET", "/api/v1/leads")[0], 200)
            env.gw.stop()
            with open(path, "rb") as f:
                self.assertNotEqual(f.read(), data)
            # A damaged file stops the start and is not overwritten.
            with open(path, "wb") as f:
                f.write(b"{not json")
            r = subprocess.run([GATEWAY_BIN, "--config", env.gw.config_path], capture_output=True,
                               text=True, timeout=20)
            self.assertEqual(r.returncode, 1)
            self.assertIn("damaged", r.stderr)
            with open(path, "rb") as f:
                self.assertEqual(f.read(), b"{not json")
        finally:
            env.close()

    # Two minutes of soak, and a kill landing in the few milliseconds between the vendor
    # redeeming a single-use refresh token and the new one reaching the disk loses the grant
    # (README, "The kill -9 window"): run on demand, not in CI.
    @unittest.skipUnless(os.environ.get("GATEWAY_SOAK"), "set GATEWAY_SOAK=1 to run")
    def test_kill_9_at_random_moments_across_50_refresh_cycles(self):
        import base64
        import random
        rt = seed_refresh()
        key = base64.b64encode(os.urandom(32)).decode()
        path = os.path.join(W.path, "kill9-%s.db" % os.urandom(4).hex())
        env = Env("chime", "chime", {"id": "c", "grant": "refresh_token",
                                     "credentials": {"refresh_token": rt}},
                  ["--seed-refresh", rt, "--rotate-refresh", "--token-lifetime", "3"],
                  store={"kind": "file", "path": path, "key": key}, name="kill9")
        rng = random.Random(int.from_bytes(os.urandom(4), "big"))
        kills = 0
        failures = []
        start = time.time()
        try:
            env.wait_token()
            while env.sim.state()["token_requests"] < 50 and time.time() - start < 240:
                until = time.time() + rng.uniform(0.2, 3.0)
                c = env.gw.conn(timeout=10)
                first = True
                while time.time() < until:
                    c.request("GET", "/api/v1/leads")
                    r = c.getresponse()
                    r.read()
                    if r.status != 200:
                        failures.append((kills, r.status))
                    first = False
                    time.sleep(0.02)
                c.close()
                env.gw.proc.kill()  # kill -9, whatever the gateway is doing
                env.gw.proc.wait()
                env.gw.reader.join(5)
                env.gw.log_file.close()
                kills += 1
                env.gw.start()
            st = env.sim.state()
            failed = [l for l in env.gw.json_lines() if l.get("msg") == "token refresh failed"]
            print("\n[measure] %d kill -9 restarts over %.0f s and %d refresh cycles: "
                  "%d invalid_grant, %d refresh tokens reused, %d non-200 answers"
                  % (kills, time.time() - start, st["token_requests"], st["invalid_grant"],
                     st["refresh_reuse"], len(failures)))
            self.assertGreaterEqual(st["token_requests"], 50)
            self.assertEqual(st["invalid_grant"], 0)
            self.assertEqual(st["refresh_reuse"], 0)
            self.assertEqual(failures, [])
            self.assertEqual([l for l in failed if l.get("state") == "needs_reauth"], [])
            with open(path, "rb") as f:
                data = f.read()
            self.assertIsNone(re.search(rb"(at|rt)-[0-9a-f]{16}", data))
        finally:
            env.close()


if __name__ == "__main__":
    unittest.main()
