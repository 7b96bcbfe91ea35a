"""The vendor's rate limits (SPEC 5.1, issue 17): a 429 with Retry-After starts a cool-down
for that connection; with rate_limit: enforce the gateway answers its callers itself (429
rate_limited, Retry-After falling) and the vendor sees none of those requests; other
connections are unaffected; observe passes everything and counts; off ignores it; with the
redis store every replica holds off."""
import json
import os
import re
import shutil
import time
import unittest
import urllib.request

from harness import CA, Gateway, Sim, Workdir, base_config, scan_for_secrets, secret
from test_redis import Redis

W = Workdir()
CA_ = CA(W.path)
CERT, KEY = CA_.issue("sim", "IP:127.0.0.1,DNS:localhost")
TOKEN = secret("at-" + os.urandom(8).hex())
ADMIN = secret("admin-" + os.urandom(8).hex())


def config(sim, store=None):
    cfg = base_config(CA_.cert, W.path)
    cfg["admin"]["token"] = ADMIN
    if store:
        cfg["store"] = store
    cfg["integrations"] = [
        {"name": mode, "policy": "chime", "rate_limit": mode,
         "overrides": {"upstream": sim.url, "token_url": sim.url + "/api/user-web/oauth/token"}}
        for mode in ("enforce", "observe", "off")]
    cfg["connections"] = [{"id": "%s-%s" % (mode, who), "integration": mode, "grant": "static",
                           "credentials": {"access_token": TOKEN}}
                          for mode in ("enforce", "observe", "off") for who in ("a", "b", "c")]
    return cfg


def call(gw, integration, connection):
    return gw.request("GET", "/%s/v1/leads" % integration, headers={"X-Gateway-Connection": connection})


def counter(gw, integration, action):
    m = re.search(r'^gateway_rate_limited_total\{action="%s",integration="%s"\} (\S+)$'
                  % (action, integration), gw.metrics_text(), re.M)
    return float(m.group(1)) if m else 0.0


def admin_connection(gw, cid):
    req = urllib.request.Request("http://127.0.0.1:%d/admin/connections/%s" % (gw.admin_port, cid),
                                 headers={"Authorization": "Bearer " + ADMIN})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


class RateLimitTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sim = Sim("chime", CERT, KEY, "--seed-token", TOKEN)
        cls.gw = Gateway(W.path, config(cls.sim), name="rate-limit").start()

    @classmethod
    def tearDownClass(cls):
        cls.gw.stop()
        cls.sim.stop()
        leaks = scan_for_secrets([cls.gw.log_path], extra=[ADMIN])
        assert not leaks, "secrets in the gateway's log: %r" % leaks

    def api_requests(self):
        return self.sim.state()["api_requests"]

    def test_enforce_holds_the_connection_off_for_the_vendor(self):
        self.sim.control("/_sim/rate_limit", {"count": 1, "status": 429, "retry_after": "3"})
        status, headers, body = call(self.gw, "enforce", "enforce-a")
        start = time.time()
        # The vendor's own 429 passes to the caller as it came.
        self.assertEqual(status, 429)
        self.assertEqual(headers.get("Retry-After"), "3")
        self.assertEqual(json.loads(body), {"error": "rate limited"})
        seen = self.api_requests()
        waits = []
        while time.time() - start < 2.5:
            status, headers, body = call(self.gw, "enforce", "enforce-a")
            self.assertEqual(status, 429)
            self.assertEqual(json.loads(body)["error"], "rate_limited")
            waits.append(int(headers["Retry-After"]))
            time.sleep(0.25)
        print("\n[measure] Retry-After the gateway answered during a 3 s cool-down: %s" % waits)
        self.assertEqual(self.api_requests(), seen, "a request reached the vendor during the cool-down")
        self.assertTrue(all(1 <= w <= 3 for w in waits), waits)
        self.assertEqual(waits, sorted(waits, reverse=True))  # falling
        self.assertLess(waits[-1], waits[0])
        self.assertGreaterEqual(counter(self.gw, "enforce", "enforced"), len(waits))
        self.assertIsNotNone(admin_connection(self.gw, "enforce-a")["rate_limited_until"])
        # Another connection of the same integration is unaffected.
        self.assertEqual(call(self.gw, "enforce", "enforce-b")[0], 200)
        self.assertIsNone(admin_connection(self.gw, "enforce-b")["rate_limited_until"])
        # Past the cool-down the connection is served again.
        time.sleep(max(0.0, start + 3.1 - time.time()))
        self.assertEqual(call(self.gw, "enforce", "enforce-a")[0], 200)
        self.assertIsNone(admin_connection(self.gw, "enforce-a")["rate_limited_until"])

    def test_observe_passes_everything_and_counts(self):
        self.sim.control("/_sim/rate_limit", {"count": 1, "status": 503, "retry_after": "3"})
        self.assertEqual(call(self.gw, "observe", "observe-a")[0], 503)
        before = self.api_requests()
        for _ in range(5):
            self.assertEqual(call(self.gw, "observe", "observe-a")[0], 200)
        self.assertEqual(self.api_requests(), before + 5)
        self.assertEqual(counter(self.gw, "observe", "observed"), 5)
        self.assertEqual(counter(self.gw, "observe", "enforced"), 0)

    def test_off_ignores_it(self):
        self.sim.control("/_sim/rate_limit", {"count": 1, "status": 429, "retry_after": "3"})
        self.assertEqual(call(self.gw, "off", "off-a")[0], 429)
        self.assertEqual(call(self.gw, "off", "off-a")[0], 200)
        self.assertEqual(counter(self.gw, "off", "observed") + counter(self.gw, "off", "enforced"), 0)
        self.assertIsNone(admin_connection(self.gw, "off-a")["rate_limited_until"])

    def test_an_http_date_and_nonsense(self):
        # An HTTP-date two seconds ahead works like "2"; an unreadable value starts nothing.
        # (Connections of their own: the other tests check enforce-b and observe-b are free.)
        when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 3))
        self.sim.control("/_sim/rate_limit", {"count": 1, "status": 429, "retry_after": when})
        self.assertEqual(call(self.gw, "enforce", "enforce-c")[0], 429)
        status, _, body = call(self.gw, "enforce", "enforce-c")
        self.assertEqual((status, json.loads(body)["error"]), (429, "rate_limited"))
        self.sim.control("/_sim/rate_limit", {"count": 1, "status": 429, "retry_after": "soon"})
        self.assertEqual(call(self.gw, "observe", "observe-c")[0], 429)
        self.assertEqual(call(self.gw, "observe", "observe-c")[0], 200)


@unittest.skipUnless(shutil.which("redis-server"), "redis-server is installed by scripts/setup.sh")
class SharedRateLimitTest(unittest.TestCase):
    def test_three_replicas_hold_off(self):
        redis = Redis()
        sim = Sim("chime", CERT, KEY, "--seed-token", TOKEN)
        store = {"kind": "redis", "key": "A" * 43 + "=",
                 "redis": {"url": "redis://127.0.0.1:%d/0" % redis.port, "prefix": "rl:"}}
        gws = [Gateway(W.path, config(sim, store), name="rate-limit-%d" % i).start() for i in range(3)]
        try:
            deadline = time.time() + 5
            while time.time() < deadline and "3" not in redis.cli("PUBSUB", "NUMSUB", "rl:updates"):
                time.sleep(0.05)
            sim.control("/_sim/rate_limit", {"count": 1, "status": 429, "retry_after": "3"})
            self.assertEqual(call(gws[0], "enforce", "enforce-a")[0], 429)
            time.sleep(0.3)  # the cool-down travels through Redis pub/sub
            seen = sim.state()["api_requests"]
            for gw in gws:
                status, headers, body = call(gw, "enforce", "enforce-a")
                self.assertEqual((status, json.loads(body)["error"]), (429, "rate_limited"), gw.config_path)
                self.assertIn(headers["Retry-After"], ("1", "2", "3"))
            self.assertEqual(sim.state()["api_requests"], seen)
            # The other connection, on every replica, is served.
            for gw in gws:
                self.assertEqual(call(gw, "enforce", "enforce-b")[0], 200)
        finally:
            for gw in gws:
                gw.stop()
            sim.stop()
            redis.kill()
        leaks = scan_for_secrets([gw.log_path for gw in gws], extra=[ADMIN])
        self.assertEqual(leaks, [])


if __name__ == "__main__":
    unittest.main()
