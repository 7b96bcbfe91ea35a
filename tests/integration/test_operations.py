"""Operating the gateway (SPEC sections 2, 7, 8, 9): a real Prometheus scraping /metrics,
live reload on SIGHUP, graceful drain on SIGTERM, and the JSON log lines."""
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import unittest
import urllib.parse
import urllib.request

from harness import CA, Gateway, Sim, Workdir, base_config, free_port, secret

W = Workdir()
CA_ = CA(W.path)
CERT, KEY = CA_.issue("sim", "IP:127.0.0.1,DNS:localhost")
TOKEN = secret("tok-" + os.urandom(8).hex())
ACCESS_FIELDS = {"ts", "request_id", "integration", "connection", "method", "path", "status",
                 "upstream_status", "duration_ms", "upstream_ms", "retried", "bytes_in", "bytes_out"}


def chime_integration(sim, name="chime"):
    return {"name": name, "policy": "chime", "client_id": "cid", "client_secret": sim.client_secret,
            "overrides": {"upstream": sim.url, "token_url": sim.url + "/api/user-web/oauth/token"}}


class OperationsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sim = Sim("chime", CERT, KEY, "--client-id", "cid", "--seed-token", TOKEN)

    @classmethod
    def tearDownClass(cls):
        cls.sim.stop()

    def gateway(self, name, connections=None, **extra):
        cfg = base_config(CA_.cert, W.path)
        cfg["integrations"] = [chime_integration(self.sim)]
        cfg["connections"] = connections or [{"id": "acme", "integration": "chime", "grant": "static",
                                              "credentials": {"access_token": TOKEN}}]
        cfg.update(extra)
        return Gateway(W.path, cfg, name=name).start()

    def test_connections_are_spread_evenly_over_the_event_loops(self):
        # Four keep-alive callers on two event loops: each loop serves two of them, so each
        # does about half of the work. (With one SO_REUSEPORT acceptor per loop the kernel
        # chose by a hash of the addresses, and a 3/1 or 4/0 split came 5 times in 8.)
        gw = self.gateway("spread", threads=2)

        def loop_cpu():
            # Loop 0 runs on the main thread; loop 1 on the first thread named gw-loop-1
            # (helper threads it starts, Asio's resolver among them, inherit the name).
            ticks = {}
            pid = gw.proc.pid
            for tid in sorted(os.listdir("/proc/%d/task" % pid), key=int, reverse=True):
                base = "/proc/%d/task/%s/" % (pid, tid)
                with open(base + "comm") as f:
                    name = "loop-0" if int(tid) == pid else f.read().strip()
                if name in ("loop-0", "gw-loop-1"):
                    with open(base + "stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    ticks[name] = int(fields[11]) + int(fields[12])
            return ticks

        self.assertEqual(sorted(loop_cpu()), ["gw-loop-1", "loop-0"])
        before = loop_cpu()
        errors = []

        def caller():
            c = gw.conn()
            try:
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline:
                    c.request("GET", "/chime/v1/leads")
                    r = c.getresponse()
                    r.read()
                    if r.status != 200:
                        errors.append(r.status)
            except Exception as e:  # noqa: BLE001 - reported by the assertion below
                errors.append(repr(e))
            finally:
                c.close()

        callers = [threading.Thread(target=caller) for _ in range(4)]
        for t in callers:
            t.start()
        for t in callers:
            t.join()
        after = loop_cpu()
        self.assertEqual(errors, [])
        used = {name: after[name] - before[name] for name in after}
        total = sum(used.values())
        self.assertGreater(total, 10, used)  # clock ticks: enough work to tell the loops apart
        for name, ticks in used.items():
            self.assertGreater(ticks / total, 0.3, used)

    @unittest.skipUnless(shutil.which("prometheus"), "prometheus is installed by scripts/setup.sh")
    def test_prometheus_scrapes_metrics(self):
        rt = secret("rt-seed-" + os.urandom(8).hex())
        # A simulator of its own: this test revokes every token it issued.
        sim = Sim("chime", CERT, KEY, "--client-id", "cid", "--seed-refresh", rt)
        cfg = base_config(CA_.cert, W.path)
        cfg["integrations"] = [chime_integration(sim)]
        cfg["connections"] = [{"id": "acme", "integration": "chime", "grant": "refresh_token",
                               "credentials": {"refresh_token": rt}}]
        gw = Gateway(W.path, cfg, name="prom").start()
        self.addCleanup(sim.stop)
        port = free_port()
        prom_dir = os.path.join(W.path, "prometheus")
        os.makedirs(prom_dir, exist_ok=True)
        with open(os.path.join(prom_dir, "prometheus.yml"), "w") as f:
            f.write("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                    "scrape_configs:\n  - job_name: gateway\n    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n" % gw.admin_port)
        prom = subprocess.Popen(["prometheus", "--config.file=" + os.path.join(prom_dir, "prometheus.yml"),
                                 "--storage.tsdb.path=" + os.path.join(prom_dir, "data"),
                                 "--web.listen-address=127.0.0.1:%d" % port],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # Traffic with a refresh forced by a rejection and a replayed request.
            self.assertEqual(gw.request("GET", "/chime/v1/leads")[0], 200)
            sim.control("/_sim/revoke", {})
            self.assertEqual(gw.request("GET", "/chime/v1/leads")[0], 200)

            def query(expr):
                url = "http://127.0.0.1:%d/api/v1/query?query=%s" % (port, urllib.parse.quote(expr))
                with urllib.request.urlopen(url, timeout=5) as r:
                    return json.loads(r.read())["data"]["result"]

            wanted = {
                'up{job="gateway"}': None,
                "sum(gateway_requests_total)": None,
                'sum(gateway_token_refreshes_total{trigger="rejected"})': None,
                'sum(gateway_auth_retries_total{result="replayed"})': None,
            }
            deadline = time.time() + 30
            while time.time() < deadline:
                try:
                    for expr in wanted:
                        res = query(expr)
                        wanted[expr] = float(res[0]["value"][1]) if res else None
                except OSError:
                    pass
                if all(v for v in wanted.values()):
                    break
                time.sleep(0.5)
            self.assertEqual(wanted['up{job="gateway"}'], 1.0, wanted)
            self.assertGreaterEqual(wanted["sum(gateway_requests_total)"], 2, wanted)
            self.assertGreaterEqual(wanted['sum(gateway_token_refreshes_total{trigger="rejected"})'], 1, wanted)
            self.assertGreaterEqual(wanted['sum(gateway_auth_retries_total{result="replayed"})'], 1, wanted)
            # No connection id, token or path among the label values.
            text = gw.metrics_text()
            self.assertNotIn('"acme"', text)
            self.assertNotIn("/v1/leads", text)
            self.assertNotIn(TOKEN, text)
        finally:
            prom.terminate()
            prom.wait(10)
            gw.stop()

    def test_reload_adds_route_and_keeps_streams(self):
        gw = self.gateway("reload")
        try:
            self.assertEqual(gw.request("GET", "/chime2/v1")[0], 404)
            result = {}

            def stream():
                c = gw.conn(timeout=30)
                c.putrequest("POST", "/chime/v1/upload")
                c.putheader("Transfer-Encoding", "chunked")
                c.endheaders()
                for _ in range(10):  # 5 s of body, straddling the reload
                    c.send(b"400\r\n" + b"x" * 1024 + b"\r\n")
                    time.sleep(0.5)
                c.send(b"0\r\n\r\n")
                r = c.getresponse()
                result["status"] = r.status
                result["body"] = json.loads(r.read())

            t = threading.Thread(target=stream)
            t.start()
            time.sleep(1)
            cfg = dict(gw.config)
            cfg["integrations"] = gw.config["integrations"] + [chime_integration(self.sim, "chime2")]
            cfg["connections"] = gw.config["connections"] + [
                {"id": "acme2", "integration": "chime2", "grant": "static",
                 "credentials": {"access_token": TOKEN}}]
            gw.write_config(cfg)
            gw.signal(signal.SIGHUP)
            deadline = time.time() + 5
            while time.time() < deadline and gw.request("GET", "/chime2/v1")[0] != 200:
                time.sleep(0.1)
            self.assertEqual(gw.request("GET", "/chime2/v1")[0], 200)
            t.join()
            self.assertEqual(result["status"], 200)
            self.assertEqual(result["body"]["body_len"], 10 * 1024)

            # A broken config is refused: the old one keeps serving, and it is counted.
            with open(gw.config_path, "w") as f:
                f.write("integratons: [\n")
            gw.signal(signal.SIGHUP)
            time.sleep(0.5)
            self.assertEqual(gw.request("GET", "/chime2/v1")[0], 200)
            text = gw.metrics_text()
            self.assertIn('gateway_config_reloads_total{result="error"} 1', text)
            self.assertIn('gateway_config_reloads_total{result="ok"} 1', text)
            refused = gw.wait_lines(lambda l: "reload refused" in l.get("msg", ""))
            self.assertEqual(len(refused), 1)
        finally:
            gw.stop()

    def test_reload_keeps_the_pool_unless_the_trust_store_changed(self):
        ca_file = os.path.join(W.path, "pool-ca.pem")
        shutil.copy(CA_.cert, ca_file)
        cfg = base_config(ca_file, W.path)
        cfg["integrations"] = [chime_integration(self.sim)]
        cfg["connections"] = [{"id": "acme", "integration": "chime", "grant": "static",
                               "credentials": {"access_token": TOKEN}}]
        cfg["upstream"]["idle_timeout"] = "3s"
        cfg["threads"] = 1  # one event loop, so one pool: every request sees the same one
        gw = Gateway(W.path, cfg, name="pool-reload").start()

        def reload():
            done = len(gw.wait_lines(lambda l: l.get("msg") == "config reloaded", timeout=0))
            gw.signal(signal.SIGHUP)
            seen = gw.wait_lines(lambda l: l.get("msg") == "config reloaded", count=done + 1)
            self.assertEqual(len(seen), done + 1)

        def opened_by(requests):
            before = self.sim.state()["api_connections"]
            c = gw.conn()
            for _ in range(requests):
                c.request("GET", "/chime/v1/leads")
                r = c.getresponse()
                r.read()
                self.assertEqual(r.status, 200)
            c.close()
            return self.sim.state()["api_connections"] - before

        try:
            self.assertEqual(opened_by(3), 1)
            reload()  # same files: the same TLS context, so the pooled connection serves on
            self.assertEqual(opened_by(3), 0)
            other = CA(W.path, "Other CA")
            with open(ca_file, "a") as f, open(other.cert) as extra:
                f.write(extra.read())
            reload()  # a changed trust store retires connections verified with the old one
            self.assertEqual(opened_by(3), 1)
            # Unused, the idle connection is closed once past idle_timeout (a sweep every 5 s),
            # without waiting for a request to its host.
            deadline = time.time() + 12
            idle = None
            while time.time() < deadline:
                text = gw.metrics_text()
                idle = float(text.split('gateway_upstream_connections{state="idle"} ')[1].split()[0])
                if idle == 0:
                    break
                time.sleep(0.2)
            self.assertEqual(idle, 0)
        finally:
            gw.stop()

    def test_reload_during_a_refresh_keeps_the_rotated_refresh_token(self):
        # Found by benchmarks/soak.py: a SIGHUP while a refresh was in flight left the
        # reloaded connection with the spent refresh token; with single-use rotation its next
        # refresh got invalid_grant and the connection was lost for good.
        rt = secret("rt-seed-" + os.urandom(8).hex())
        sim = Sim("chime", CERT, KEY, "--client-id", "cid", "--seed-refresh", rt, "--rotate-refresh")
        cfg = base_config(CA_.cert, W.path)
        cfg["integrations"] = [chime_integration(sim)]
        cfg["connections"] = [{"id": "acme", "integration": "chime", "grant": "refresh_token",
                               "credentials": {"refresh_token": rt}}]
        gw = Gateway(W.path, cfg, name="reload-refresh").start()
        try:
            self.assertEqual(gw.request("GET", "/chime/v1/leads")[0], 200)  # first token
            sim.control("/_sim/config", {"token_delay_ms": 1500})
            sim.control("/_sim/revoke", {})
            result = {}

            def rejected_then_replayed():
                result["status"] = gw.request("GET", "/chime/v1/leads", timeout=20)[0]

            t = threading.Thread(target=rejected_then_replayed)
            t.start()
            time.sleep(0.5)  # the forced refresh waits on the slow token endpoint
            gw.signal(signal.SIGHUP)
            t.join()
            self.assertEqual(result["status"], 200)
            gw.wait_lines(lambda l: l.get("msg") == "config reloaded")
            sim.control("/_sim/config", {"token_delay_ms": 0})
            sim.control("/_sim/revoke", {})  # the reloaded connection must refresh again
            self.assertEqual(gw.request("GET", "/chime/v1/leads")[0], 200)
            st = sim.state()
            self.assertEqual(st["invalid_grant"], 0)
            self.assertEqual(st["refresh_reuse"], 0)
        finally:
            gw.stop()
            sim.stop()

    def test_sigterm_drains_200_slow_requests(self):
        gw = self.gateway("drain200", shutdown={"drain_timeout": "20s"}, threads=2,
                          upstream={"ca_file": CA_.cert, "response_timeout": "20s"})
        self.sim.control("/_sim/config", {"delay_ms": 2000})
        statuses = []
        lock = threading.Lock()

        def one():
            try:
                s = gw.request("GET", "/chime/v1/slow", timeout=30)[0]
            except OSError as e:
                s = repr(e)
            with lock:
                statuses.append(s)

        threads = [threading.Thread(target=one) for _ in range(200)]
        try:
            for t in threads:
                t.start()
            deadline = time.time() + 10
            while time.time() < deadline:
                text = gw.metrics_text()
                inflight = [l for l in text.splitlines() if l.startswith("gateway_inflight_requests ")]
                if inflight and float(inflight[0].split()[1]) >= 200:
                    break
                time.sleep(0.05)
            start = time.time()
            gw.signal(signal.SIGTERM)
            time.sleep(0.3)
            with self.assertRaises(OSError):  # listeners are closed: new connections refused
                socket.create_connection(("127.0.0.1", gw.port), timeout=2).close()
            for t in threads:
                t.join()
            code = gw.proc.wait(25)
            elapsed = time.time() - start
        finally:
            self.sim.control("/_sim/config", {"delay_ms": 0})
            gw.stop()
        self.assertEqual(statuses.count(200), 200, statuses[:5])
        self.assertEqual(code, 0)
        self.assertLess(elapsed, 20)
        print("\n[measure] SIGTERM with 200 slow requests in flight: all 200 answered, exit 0 after %.1f s"
              % elapsed)

    def test_log_lines_are_json_with_access_fields(self):
        gw = self.gateway("logs")
        try:
            gw.request("GET", "/chime/v1/leads?x=1")
            gw.request("GET", "/nope")
            gw.raw(b"GET /chime/%2e%2e HTTP/1.1\r\nHost: x\r\n\r\n")
        finally:
            gw.stop()
        with open(gw.log_path) as f:
            lines = f.read().splitlines()
        self.assertTrue(lines)
        access = 0
        for line in lines:
            obj = json.loads(line)  # every line is one JSON object
            self.assertIn("ts", obj)
            if obj.get("type") == "access":
                access += 1
                self.assertLessEqual(ACCESS_FIELDS, set(obj), obj)
            else:
                self.assertIn(obj["level"], ("debug", "info", "warn", "error"))
                self.assertIn("msg", obj)
        self.assertEqual(access, 3)


if __name__ == "__main__":
    unittest.main()
