"""Vendor connections (issue 18): reconnects resume the TLS session, a changed trust store
drops the saved sessions, and the pool keeps what a burst of callers made busy.

Against tests/fakes/broken_vendor.py: `/close` ends each connection after one answer (as a
vendor's load balancer does after N requests), and the vendor counts full and resumed
handshakes itself; `/slow-answer` holds a connection 1.8 s so that callers overlap.
"""
import os
import re
import shutil
import signal
import sys
import unittest
from concurrent.futures import ThreadPoolExecutor

from harness import CA, Gateway, Workdir, base_config, scan_for_secrets, secret

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakes"))
from broken_vendor import BrokenVendor  # noqa: E402

W = Workdir()
CA_ = CA(W.path)
OTHER_CA = CA(W.path, name="Other CA")
CERT, KEY = CA_.issue("vendor", "IP:127.0.0.1,DNS:localhost")
TOKEN = secret("tok-" + os.urandom(8).hex())


def handshakes(gw, resumed):
    text = gw.metrics_text()
    m = re.search(r'^gateway_upstream_handshakes_total\{resumed="%s"\} (\S+)$' % resumed, text, re.M)
    return float(m.group(1)) if m else None


class UpstreamTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.vendor = BrokenVendor(CERT, KEY).start()
        # A trust file of the test's own, so that changing it is a changed trust store.
        cls.ca_file = os.path.join(W.path, "trust.pem")
        shutil.copy(CA_.cert, cls.ca_file)
        cfg = base_config(cls.ca_file, W.path)
        cfg["threads"] = 1  # one pool: its connections are counted exactly
        cfg["integrations"] = [{"name": "v", "policy": "chime",
                                "overrides": {"upstream": cls.vendor.url}}]
        cfg["connections"] = [{"id": "a", "integration": "v", "grant": "static",
                               "credentials": {"access_token": TOKEN}}]
        cls.cfg = cfg
        cls.gw = Gateway(W.path, cfg, name="upstream").start()

    @classmethod
    def tearDownClass(cls):
        cls.gw.stop()
        cls.vendor.stop()
        leaks = scan_for_secrets([cls.gw.log_path])
        assert not leaks, "secrets in the gateway's log: %r" % leaks

    def closing_requests(self, n):
        for _ in range(n):
            status, _, body = self.gw.request("GET", "/v/close")
            self.assertEqual((status, body), (200, b"ok"))

    def test_1_reconnects_resume_the_session(self):
        full0, resumed0 = self.vendor.handshakes()
        m_full0, m_resumed0 = handshakes(self.gw, "false"), handshakes(self.gw, "true")
        self.closing_requests(20)
        full, resumed = self.vendor.handshakes()
        print("\n[measure] 20 requests, each on a new vendor connection: %d full, %d resumed "
              "handshakes at the vendor" % (full - full0, resumed - resumed0))
        # At most the first is full (none if an earlier test already saved a session).
        self.assertLessEqual(full - full0, 1)
        self.assertGreaterEqual(resumed - resumed0, 19)
        self.assertEqual(handshakes(self.gw, "true") - m_resumed0, resumed - resumed0)
        self.assertEqual(handshakes(self.gw, "false") - m_full0, full - full0)

    def test_2_a_changed_trust_store_drops_the_sessions(self):
        self.closing_requests(2)  # a session is saved
        with open(self.ca_file, "a") as f, open(OTHER_CA.cert) as extra:
            f.write(extra.read())  # one more anchor: a different trust store
        self.gw.signal(signal.SIGHUP)
        self.gw.wait_lines(lambda l: l.get("msg") == "config reloaded", timeout=5)
        full0, resumed0 = self.vendor.handshakes()
        self.closing_requests(3)
        full, resumed = self.vendor.handshakes()
        # The first connection verified under the new store is a full handshake; then resumed.
        self.assertEqual((full - full0, resumed - resumed0), (1, 2))

    def test_3_the_pool_keeps_what_a_burst_made_busy(self):
        def call(_):
            status, _, _ = self.gw.request("GET", "/v/slow-answer", timeout=20)
            return status

        callers = 100  # more than the 64 idle connections per host the pool used to keep
        with ThreadPoolExecutor(callers) as pool:
            self.assertEqual(set(pool.map(call, range(callers))), {200})
        opened = self.vendor.connections()
        with ThreadPoolExecutor(callers) as pool:
            self.assertEqual(set(pool.map(call, range(callers))), {200})
        again = self.vendor.connections() - opened
        print("\n[measure] a second burst of %d callers opened %d new vendor connections" % (callers, again))
        self.assertEqual(again, 0)


if __name__ == "__main__":
    unittest.main()
