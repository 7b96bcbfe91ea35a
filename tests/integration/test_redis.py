"""Several gateways sharing one Redis token store (SPEC 6.8): one refresh per expiry for the
whole cluster with single-use rotating refresh tokens, valid tokens serving through a Redis
outage with /readyz saying so, recovery without restarts, nothing in clear in Redis."""
import base64
import os
import shutil
import threading
import time
import unittest
import urllib.error
import urllib.request

from harness import CA, Gateway, Redis as _Redis, Sim, Workdir, base_config, secret, stop_all, traffic

W = Workdir()


def Redis(port=None):
    return _Redis(W.path, port)
CA_ = CA(W.path)
CERT, KEY = CA_.issue("sim", "IP:127.0.0.1,DNS:localhost")


def readyz(gw):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % gw.admin_port, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@unittest.skipUnless(shutil.which("redis-server"), "redis-server is installed by scripts/setup.sh")
class RedisClusterTest(unittest.TestCase):
    def cluster(self, redis, sim, rt, n, name, timeout="2s", lease=None):
        key = base64.b64encode(os.urandom(32)).decode()
        gws = []
        for i in range(n):
            cfg = base_config(CA_.cert, W.path)
            cfg["store"] = {"kind": "redis", "key": key,
                            "redis": {"url": "redis://127.0.0.1:%d/0" % redis.port, "prefix": name + ":"}}
            if lease:
                cfg["store"]["redis"]["lock_lease"] = lease
            cfg["refresh"] = {"skew": "1s", "timeout": timeout,
                              "backoff": {"initial": "200ms", "max": "1s"}}
            cfg["integrations"] = [{"name": "chime", "policy": "chime", "client_id": "cid",
                                    "client_secret": sim.client_secret,
                                    "overrides": {"upstream": sim.url,
                                                  "token_url": sim.url + "/api/user-web/oauth/token"}}]
            cfg["connections"] = [{"id": "acme", "integration": "chime", "grant": "refresh_token",
                                   "credentials": {"refresh_token": rt}}]
            gws.append(Gateway(W.path, cfg, name="%s-%d" % (name, i)).start())
        return gws

    def test_four_replicas_refresh_once_per_expiry(self):
        redis = Redis()
        rt = secret("rt-seed-" + os.urandom(8).hex())
        sim = Sim("chime", CERT, KEY, "--client-id", "cid", "--seed-refresh", rt, "--rotate-refresh",
                  "--token-lifetime", "3")
        gws = self.cluster(redis, sim, rt, 4, "four")
        try:
            # Every replica listens for the others' saves instead of polling for them.
            deadline = time.time() + 5
            while time.time() < deadline and "4" not in redis.cli("PUBSUB", "NUMSUB", "four:updates"):
                time.sleep(0.05)
            self.assertEqual(redis.cli("PUBSUB", "NUMSUB", "four:updates").split(), ["four:updates", "4"])
            start = time.time()
            statuses = traffic(gws, 0.06, count=500)
            elapsed = time.time() - start
            st = sim.state()
            # Tokens live 3 s and are refreshed 1 s ahead: one refresh every ~2 s at most.
            per_expiry_bound = elapsed / 2 + 2
            print("\n[measure] 4 replicas, %d requests over %.1f s (%d expiries of 3 s tokens): "
                  "%d token requests, %d invalid_grant, %d non-200"
                  % (len(statuses), elapsed, int(elapsed / 3), st["token_requests"],
                     st["invalid_grant"], len([s for s in statuses if s != 200])))
            self.assertEqual(len(statuses), 2000)
            self.assertEqual([s for s in statuses if s != 200], [])
            self.assertEqual(st["invalid_grant"], 0)
            self.assertEqual(st["refresh_reuse"], 0)
            self.assertGreaterEqual(elapsed / 3, 10)
            self.assertLessEqual(st["token_requests"], per_expiry_bound)
            # Nothing in clear in Redis.
            dump = redis.cli("--no-raw", "KEYS", "*")
            for k in [l.split(")", 1)[-1].strip().strip('"') for l in dump.splitlines() if l.strip()]:
                value = redis.cli("HGETALL", k) + redis.cli("GET", k)
                self.assertNotIn("at-", value)
                self.assertNotIn("rt-", value)
        finally:
            stop_all([*gws, sim, redis.kill])

    def test_token_endpoint_slower_than_the_lease(self):
        # Lease 2 s, token call 5 s: the holder renews its lease while the call runs, so no
        # other replica takes the lock and redeems the same single-use refresh token.
        redis = Redis()
        rt = secret("rt-seed-" + os.urandom(8).hex())
        sim = Sim("chime", CERT, KEY, "--client-id", "cid", "--seed-refresh", rt, "--rotate-refresh",
                  "--token-lifetime", "4")
        sim.control("/_sim/config", {"token_delay_ms": 5000})
        gws = self.cluster(redis, sim, rt, 3, "slow", timeout="10s", lease="2s")
        try:
            start = time.time()
            statuses = traffic(gws, 0.1, seconds=20)
            elapsed = time.time() - start
            st = sim.state()
            # Each refresh takes 5 s and its token lives 4 s, refreshed 1 s ahead: one refresh
            # per >= 8 s, the first at the start.
            bound = int(elapsed / 8) + 1
            print("\n[measure] lease 2 s, token call 5 s, 3 replicas, %.1f s: %d token requests "
                  "(at most %d expiries), %d refresh tokens redeemed twice, %d non-200 of %d"
                  % (elapsed, st["token_requests"], bound, st["refresh_reuse"],
                     len([s for s in statuses if s != 200]), len(statuses)))
            self.assertEqual([s for s in statuses if s != 200], [])
            self.assertEqual(st["refresh_reuse"], 0)
            self.assertEqual(st["invalid_grant"], 0)
            self.assertGreaterEqual(st["token_requests"], 2)
            self.assertLessEqual(st["token_requests"], bound)
        finally:
            sim.control("/_sim/config", {"token_delay_ms": 0})
            stop_all([*gws, sim, redis.kill])

    def test_redis_outage_keeps_valid_tokens_serving(self):
        redis = Redis()
        rt = secret("rt-seed-" + os.urandom(8).hex())
        sim = Sim("chime", CERT, KEY, "--client-id", "cid", "--seed-refresh", rt, "--rotate-refresh",
                  "--token-lifetime", "60")
        gws = self.cluster(redis, sim, rt, 2, "outage")
        try:
            for gw in gws:
                self.assertEqual(gw.request("GET", "/chime/v1/leads")[0], 200)
            redis.kill()
            sim.control("/_sim/reset", {})
            for gw in gws:
                self.assertEqual(gw.request("GET", "/chime/v1/leads")[0], 200)
                status, body = readyz(gw)
                self.assertEqual(status, 503)
                self.assertIn("redis", body)
            self.assertEqual(sim.state()["token_requests"], 0)  # no refresh without the lock
            redis = Redis(redis.port)
            deadline = time.time() + 15
            while time.time() < deadline and any(readyz(gw)[0] != 200 for gw in gws):
                time.sleep(0.2)
            for gw in gws:
                self.assertEqual(readyz(gw)[0], 200)
                self.assertEqual(gw.request("GET", "/chime/v1/leads")[0], 200)
        finally:
            stop_all([*gws, sim, redis.kill])

    def test_lock_holder_killed_mid_refresh(self):
        redis = Redis()
        rt = secret("rt-seed-" + os.urandom(8).hex())
        sim = Sim("chime", CERT, KEY, "--client-id", "cid", "--seed-refresh", rt, "--rotate-refresh",
                  "--token-lifetime", "600")
        # refresh.timeout 3 s: the lease is 6 s; the token endpoint takes 1.5 s.
        a, b = self.cluster(redis, sim, rt, 2, "killed", timeout="3s")
        try:
            self.assertEqual(a.request("GET", "/chime/v1/leads")[0], 200)
            self.assertEqual(b.request("GET", "/chime/v1/leads")[0], 200)
            self.assertEqual(sim.state()["token_requests"], 1)
            sim.control("/_sim/revoke", {})
            sim.control("/_sim/config", {"token_delay_ms": 1500})
            sim.control("/_sim/reset", {})
            def doomed():
                try:
                    a.request("GET", "/chime/v1/leads", timeout=10)
                except OSError:
                    pass  # its gateway is killed under it

            t = threading.Thread(target=doomed)
            t.daemon = True
            t.start()
            time.sleep(0.5)  # a holds the lock and waits on the token endpoint
            a.proc.kill()  # kill -9
            a.proc.wait()
            start = time.time()
            status = 0
            while time.time() - start < 25 and status != 200:
                status = b.request("GET", "/chime/v1/leads", timeout=30)[0]
            took = time.time() - start
            st = sim.state()
            print("\n[measure] lock holder killed mid-refresh: the other replica served 200 after "
                  "%.1f s (lease 6 s); token requests %d (abandoned %d), refresh tokens redeemed "
                  "twice: %d" % (took, st["token_requests"], st.get("token_requests_abandoned", 0),
                                 st["refresh_reuse"]))
            self.assertEqual(status, 200)
            self.assertEqual(st["refresh_reuse"], 0)
            self.assertEqual(st["invalid_grant"], 0)
            self.assertEqual(st.get("token_requests_abandoned", 0), 1)
        finally:
            sim.control("/_sim/config", {"token_delay_ms": 0})
            stop_all([b, a, sim, redis.kill])


if __name__ == "__main__":
    unittest.main()
