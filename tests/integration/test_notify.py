"""Health events (SPEC 6.10): a webhook receiver over TLS gets one signed event per change of
a connection's state (needs_reauth -> connected -> degraded -> recovered -> deleted), retried
while it answers 500, with no secret in any body; with three replicas on Redis, one event per
change for the whole cluster."""
import base64
import hashlib
import hmac
import http.server
import json
import os
import shutil
import ssl
import threading
import time
import unittest
import urllib.error
import urllib.request

from harness import CA, Gateway, Redis, SECRETS, Sim, Workdir, base_config, scan_for_secrets, secret, stop_all

W = Workdir()
CA_ = CA(W.path)
CERT, KEY = CA_.issue("sim", "IP:127.0.0.1,DNS:localhost")
ADMIN = secret("admin-" + os.urandom(8).hex())
NOTIFY_SECRET = secret("notify-" + os.urandom(8).hex())


class Receiver:
    """An HTTPS webhook receiver: records every delivery; answers 500 to the first
    `fail[event]` deliveries of an event, 200 to the rest."""

    def __init__(self, tls=True):
        self.deliveries = []  # (headers, body bytes, status answered)
        self.fail = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                event = json.loads(body).get("event")
                with receiver.lock:
                    left = receiver.fail.get(event, 0)
                    status = 500 if left > 0 else 200
                    if left > 0:
                        receiver.fail[event] = left - 1
                    receiver.deliveries.append((dict(self.headers), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(CERT, KEY)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = "%s://127.0.0.1:%d/hooks/gateway" % ("https" if tls else "http",
                                                        self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self):
        """The events answered 200, in order, as parsed JSON."""
        with self.lock:
            return [json.loads(b) for h, b, s in self.deliveries if s == 200]

    def all(self):
        with self.lock:
            return list(self.deliveries)

    def stop(self):
        self.server.shutdown()


def config(sim, receiver, rt, store=None):
    cfg = base_config(CA_.cert, W.path)
    cfg["admin"]["token"] = ADMIN
    if store:
        cfg["store"] = store
    cfg["refresh"] = {"skew": "1s", "timeout": "3s", "backoff": {"initial": "200ms", "max": "500ms"},
                      "failure_cooldown": "1s"}
    cfg["notify"] = {"url": receiver.url, "secret": NOTIFY_SECRET}
    cfg["integrations"] = [{"name": "chime", "policy": "chime", "client_id": "cid",
                            "client_secret": sim.client_secret,
                            "overrides": {"upstream": sim.url,
                                          "token_url": sim.url + "/api/user-web/oauth/token"}}]
    cfg["connections"] = [{"id": "acme", "integration": "chime", "grant": "refresh_token",
                           "credentials": {"refresh_token": rt}}]
    return cfg


def admin(gw, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (gw.admin_port, path), data=data,
                                 method=method, headers={"Authorization": "Bearer " + ADMIN,
                                                         "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def wait_for(predicate, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


class NotifyTest(unittest.TestCase):
    def check_signatures(self, receiver):
        for headers, body, _ in receiver.all():
            mac = hmac.new(NOTIFY_SECRET.encode(), body, hashlib.sha256).hexdigest()
            self.assertEqual(headers.get("X-Gateway-Signature"), "sha256=" + mac)
            text = body.decode()
            for s in SECRETS:
                self.assertNotIn(s, text)
            self.assertNotIn("at-", text)
            self.assertNotIn("rt-", text)

    def test_one_signed_event_per_transition_retried_while_the_receiver_fails(self):
        receiver = Receiver()
        good = secret("rt-seed-" + os.urandom(8).hex())
        sim = Sim("chime", CERT, KEY, "--client-id", "cid", "--seed-refresh", good, "--rotate-refresh",
                  "--token-lifetime", "600")
        # The bootstrap refresh token is unknown to the vendor: the first refresh is refused.
        gw = Gateway(W.path, config(sim, receiver, secret("rt-unknown-" + os.urandom(8).hex())),
                     name="notify").start()
        try:
            self.assertTrue(wait_for(lambda: len(receiver.delivered()) == 1, 10))
            # An operator puts a good refresh token in: connected.
            self.assertIn(admin(gw, "PUT", "/admin/connections/acme",
                                {"integration": "chime", "grant": "refresh_token",
                                 "credentials": {"refresh_token": good}}), (200, 201))
            self.assertTrue(wait_for(lambda: len(receiver.delivered()) == 2, 10))
            # The token endpoint fails: degraded; the receiver answers 500 twice first.
            receiver.fail["degraded"] = 2
            sim.control("/_sim/config", {"fail_token": {"count": 1, "status": 503}})
            self.assertEqual(admin(gw, "POST", "/admin/connections/acme/refresh"), 502)
            self.assertTrue(wait_for(lambda: len(receiver.delivered()) == 3, 15))
            time.sleep(0.6)  # past the backoff: the next forced refresh runs, and succeeds
            self.assertEqual(admin(gw, "POST", "/admin/connections/acme/refresh"), 200)
            self.assertTrue(wait_for(lambda: len(receiver.delivered()) == 4, 10))
            self.assertEqual(admin(gw, "DELETE", "/admin/connections/acme"), 204)
            self.assertTrue(wait_for(lambda: len(receiver.delivered()) == 5, 10))
            time.sleep(0.5)  # nothing else arrives
            events = receiver.delivered()
            print("\n[measure] events delivered: %s; deliveries in all: %d (the 2 extra are the "
                  "degraded event's retries after 500)"
                  % ([e["event"] for e in events], len(receiver.all())))
            self.assertEqual([e["event"] for e in events],
                             ["needs_reauth", "connected", "degraded", "recovered", "deleted"])
            self.assertEqual([(e["previous_state"], e["state"]) for e in events],
                             [("ready", "needs_reauth"), ("needs_reauth", "ready"),
                              ("ready", "degraded"), ("degraded", "ready"), ("ready", "deleted")])
            self.assertEqual(len({e["id"] for e in events}), 5)
            for e in events:
                self.assertEqual((e["connection"], e["integration"]), ("acme", "chime"))
                self.assertEqual(sorted(e), sorted(["id", "event", "connection", "integration",
                                                    "state", "previous_state", "reason", "at"]))
            self.assertEqual(events[0]["reason"], "invalid_grant")
            # The degraded event went three times with the same id: 500, 500, 200.
            tries = [json.loads(b)["id"] for h, b, s in receiver.all()
                     if json.loads(b)["event"] == "degraded"]
            self.assertEqual(len(tries), 3)
            self.assertEqual(len(set(tries)), 1)
            self.assertEqual([s for h, b, s in receiver.all()
                              if json.loads(b)["event"] == "degraded"], [500, 500, 200])
            self.check_signatures(receiver)
            m = gw.metrics_text()
            self.assertIn('gateway_notifications_total{event="degraded",result="retried"} 2', m)
            self.assertIn('gateway_notifications_total{event="degraded",result="delivered"} 1', m)
            self.assertIn('gateway_notifications_total{event="deleted",result="delivered"} 1', m)
            self.assertEqual(scan_for_secrets([gw.log_path], extra=[ADMIN]), [])
        finally:
            stop_all([gw, sim, receiver.stop])

    def test_plain_http_to_a_loopback_receiver_and_only_the_events_asked_for(self):
        receiver = Receiver(tls=False)
        rt = secret("rt-seed-" + os.urandom(8).hex())
        sim = Sim("chime", CERT, KEY, "--client-id", "cid", "--seed-refresh", rt, "--token-lifetime", "600")
        cfg = config(sim, receiver, rt)
        cfg["notify"]["events"] = ["deleted"]
        gw = Gateway(W.path, cfg, name="notify-http").start()
        try:
            sim.control("/_sim/config", {"fail_token": {"count": 1, "status": 503}})
            self.assertEqual(admin(gw, "POST", "/admin/connections/acme/refresh"), 502)  # degraded
            self.assertEqual(admin(gw, "DELETE", "/admin/connections/acme"), 204)
            self.assertTrue(wait_for(lambda: len(receiver.delivered()) == 1, 10))
            time.sleep(0.5)
            self.assertEqual([e["event"] for e in receiver.delivered()], ["deleted"])
            self.assertEqual(len(receiver.all()), 1)
            self.check_signatures(receiver)
        finally:
            stop_all([gw, sim, receiver.stop])

    @unittest.skipUnless(shutil.which("redis-server"), "redis-server is installed by scripts/setup.sh")
    def test_three_replicas_send_one_event_per_change(self):
        receiver = Receiver()
        redis = Redis(W.path)
        rt = secret("rt-seed-" + os.urandom(8).hex())
        sim = Sim("chime", CERT, KEY, "--client-id", "cid", "--seed-refresh", rt, "--rotate-refresh",
                  "--token-lifetime", "600")
        store = {"kind": "redis", "key": base64.b64encode(os.urandom(32)).decode(),
                 "redis": {"url": "redis://127.0.0.1:%d/0" % redis.port, "prefix": "notify:"}}
        gws = [Gateway(W.path, config(sim, receiver, rt, store), name="notify-%d" % i).start()
               for i in range(3)]
        try:
            for gw in gws:
                self.assertEqual(gw.request("GET", "/chime/v1/leads")[0], 200)
            # Every replica's refresh fails: each one turns degraded.
            sim.control("/_sim/config", {"fail_token": {"count": 3, "status": 503}})
            for gw in gws:
                self.assertEqual(admin(gw, "POST", "/admin/connections/acme/refresh"), 502)
            time.sleep(0.6)
            # One refreshes, the other two adopt its record: each one recovers.
            for gw in gws:
                self.assertEqual(admin(gw, "POST", "/admin/connections/acme/refresh"), 200)
            self.assertTrue(wait_for(lambda: len(receiver.delivered()) >= 2, 10))
            time.sleep(1)  # no third event on its way
            events = receiver.delivered()
            print("\n[measure] 3 replicas, 3 changes to degraded and 3 to ready seen: %d events "
                  "delivered %s" % (len(events), [e["event"] for e in events]))
            self.assertEqual([e["event"] for e in events], ["degraded", "recovered"])
            self.assertEqual(len(receiver.all()), 2)
            self.check_signatures(receiver)
        finally:
            stop_all([*gws, sim, redis.kill, receiver.stop])


if __name__ == "__main__":
    unittest.main()
