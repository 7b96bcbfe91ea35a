"""Hostile callers and broken vendors (issue 6): request smuggling forms are refused with 400
and the connection closed, pipelined requests are answered in order, slowloris does not
starve other callers, running out of file descriptors does not crash the gateway; a vendor
that resets, stalls, sends garbage or a huge head gets the caller a clear 502/504, a pooled
connection the vendor closes as it is reused is retried transparently, and the pool
recovers."""
import http.client
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
import unittest

from harness import CA, Gateway, Workdir, base_config, scan_for_secrets, secret

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakes"))
from broken_vendor import BrokenVendor  # noqa: E402

W = Workdir()
CA_ = CA(W.path)
CERT, KEY = CA_.issue("vendor", "IP:127.0.0.1,DNS:localhost")
TOKEN = secret("tok-" + os.urandom(8).hex())


def gateway_config(vendor, **limits):
    cfg = base_config(CA_.cert, W.path)
    cfg["limits"] = dict({"header_timeout": "2s", "idle_timeout": "5s"}, **limits)
    cfg["upstream"]["response_timeout"] = "1500ms"
    cfg["integrations"] = [{"name": "v", "policy": "chime",
                            "overrides": {"upstream": vendor.url}}]
    cfg["connections"] = [{"id": "a", "integration": "v", "grant": "static",
                           "credentials": {"access_token": TOKEN}}]
    return cfg


def metric(gw, name):
    text = gw.metrics_text()
    return sum(float(m.group(1)) for m in re.finditer(r"^%s(?:\{[^}]*\})? (\S+)$" % name, text, re.M))


def exchange(port, data, timeout=3):
    """Sends raw bytes; returns (answer, seconds until the gateway closed, closed?)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    start = time.time()
    chunks, closed = [], False
    try:
        s.sendall(data)
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            chunks.append(chunk)
    finally:
        s.close()
    return b"".join(chunks), time.time() - start, closed


class WithBrokenVendor(unittest.TestCase):
    """A gateway in front of a BrokenVendor; the log is checked for the token at the end."""
    threads = 2

    @classmethod
    def setUpClass(cls):
        cls.vendor = BrokenVendor(CERT, KEY).start()
        cfg = gateway_config(cls.vendor)
        cfg["threads"] = cls.threads
        cls.gw = Gateway(W.path, cfg, name=cls.__name__).start()

    @classmethod
    def tearDownClass(cls):
        cls.gw.stop()
        cls.vendor.stop()
        leaks = scan_for_secrets([cls.gw.log_path])
        assert not leaks, "secrets in the gateway's log: %r" % leaks


class HostileCallerTest(WithBrokenVendor):

    def assert_refused(self, data, what):
        before = self.vendor.count("/ok")
        out, took, closed = exchange(self.gw.port, data)
        status = out.split(b"\r\n", 1)[0]
        self.assertTrue(status.startswith(b"HTTP/1.1 400"), "%s: %r" % (what, out[:200]))
        self.assertIn(b"X-Gateway-Error: bad_request", out, what)
        self.assertTrue(closed, "%s: the connection stayed open" % what)
        self.assertLess(took, 2.5, what)
        # Nothing after the refused head was taken as a second request.
        self.assertEqual(out.count(b"HTTP/1.1 "), 1, what)
        return before

    def test_smuggling_forms_in_the_head(self):
        post = b"POST /v/ok HTTP/1.1\r\nHost: x\r\n"
        forms = {
            "Content-Length and Transfer-Encoding":
                post + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
            "Transfer-Encoding and Content-Length":
                post + b"Transfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nG",
            "duplicate Content-Length, different":
                post + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            "duplicate Content-Length, same":
                post + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            "Content-Length list": post + b"Content-Length: 5, 5\r\n\r\nhello",
            "Content-Length with a sign": post + b"Content-Length: +5\r\n\r\nhello",
            "negative Content-Length": post + b"Content-Length: -1\r\n\r\n",
            "space before the colon": post + b"Content-Length : 5\r\n\r\nhello",
            "obs-fold": b"GET /v/ok HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
            "obs-fold with a tab": b"GET /v/ok HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n\tb\r\n\r\n",
            "bare LF everywhere": b"GET /v/ok HTTP/1.1\nHost: x\n\n",
            "bare LF in one header": b"GET /v/ok HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
            "Transfer-Encoding not ending in chunked":
                post + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            "unknown Transfer-Encoding": post + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            "chunked twice": post + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        }
        for what, data in forms.items():
            before = self.assert_refused(data, what)
            self.assertEqual(self.vendor.count("/ok"), before, "%s reached the vendor" % what)

    def test_bad_chunk_sizes(self):
        post = b"POST /v/ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        for what, body in {"not hex": b"zz\r\nhello\r\n0\r\n\r\n",
                           "overflowing": b"fffffffffffffffff1\r\nhello\r\n0\r\n\r\n",
                           "size then garbage": b"5;\x00\r\nhello\r\n0\r\n\r\n",
                           "missing CRLF after data": b"5\r\nhelloXX0\r\n\r\n"}.items():
            self.assert_refused(post + body, "chunk " + what)

    def test_pipelined_requests_are_answered_in_order(self):
        reqs = b"".join(b"GET /v/ok?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))
        reqs += b"GET /v/ok?n=last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        out, _, closed = exchange(self.gw.port, reqs, timeout=10)
        self.assertTrue(closed)
        self.assertEqual(out.count(b"HTTP/1.1 200 OK"), 6)
        ids = re.findall(rb"X-Request-Id: (\S+)", out)
        self.assertEqual(len(ids), 6)
        self.assertEqual(len(set(ids)), 6)
        # Each answer is whole and they come in the order asked (the access log agrees).
        lines = self.gw.wait_lines(lambda l: l.get("request_id") in [i.decode() for i in ids], count=6)
        self.assertEqual([l["request_id"] for l in lines], [i.decode() for i in ids])

    @unittest.skipUnless(shutil.which("slowhttptest"), "slowhttptest is installed by scripts/setup.sh")
    def test_slowloris_does_not_starve_other_callers(self):
        # 600 connections that send a header line every 3 s and never finish their head.
        slow = subprocess.Popen(
            ["slowhttptest", "-H", "-c", "600", "-r", "300", "-i", "3", "-l", "12", "-s", "8192",
             "-t", "GET", "-u", "http://127.0.0.1:%d/v/ok" % self.gw.port, "-p", "3"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=W.path)
        try:
            time.sleep(3)  # the attack is under way
            latencies = []
            deadline = time.time() + 6
            while time.time() < deadline:
                start = time.time()
                status = self.gw.request("GET", "/v/ok", timeout=5)[0]
                latencies.append(time.time() - start)
                self.assertEqual(status, 200)
                time.sleep(0.05)
            latencies.sort()
            print("\n[measure] under slowloris (600 slow connections): %d requests served, "
                  "median %.1f ms, max %.1f ms" % (len(latencies), latencies[len(latencies) // 2] * 1000,
                                                   latencies[-1] * 1000))
            self.assertGreater(len(latencies), 20)
        finally:
            slow.kill()
            slow.wait()
        self.assertIsNone(self.gw.proc.poll())

    def test_file_descriptor_exhaustion(self):
        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96))

        cfg = gateway_config(self.vendor)
        cfg["threads"] = 1
        gw = Gateway(W.path, cfg, name="fds").start(preexec_fn=limit)
        socks = []
        try:
            for _ in range(200):  # far past what the gateway may open
                try:
                    socks.append(socket.create_connection(("127.0.0.1", gw.port), timeout=2))
                except OSError:
                    break
            time.sleep(0.5)
            self.assertIsNone(gw.proc.poll(), "the gateway died")
            for s in socks:
                s.close()
            socks = []
            # Once descriptors are free again, it serves as before.
            deadline = time.time() + 10
            status = 0
            while time.time() < deadline and status != 200:
                try:
                    status = gw.request("GET", "/v/ok", timeout=3)[0]
                except OSError:
                    time.sleep(0.2)
            self.assertEqual(status, 200)
            self.assertIsNone(gw.proc.poll())
        finally:
            for s in socks:
                s.close()
            gw.stop()


class BrokenVendorTest(WithBrokenVendor):
    threads = 1  # one upstream pool, so the tests know which connection is reused

    def assert_error(self, path, status, code):
        got, headers, body = self.gw.request("GET", path, timeout=10)
        self.assertEqual(got, status, path)
        self.assertEqual(headers.get("X-Gateway-Error"), code, path)

    def assert_recovers(self):
        self.assertEqual(self.gw.request("GET", "/v/ok")[0], 200)

    def test_chunked_answer_arriving_in_pieces(self):
        # A chunk size with no data yet must not end the caller's chunked body early.
        status, _, body = self.gw.request("GET", "/v/chunked-slowly")
        self.assertEqual((status, body), (200, b"hello world"))

    def test_garbage(self):
        self.assert_error("/v/garbage", 502, "upstream_protocol_error")
        self.assert_recovers()

    def test_huge_header(self):
        self.assert_error("/v/huge-header", 502, "upstream_protocol_error")
        self.assert_recovers()

    def test_stall(self):
        start = time.time()
        self.assert_error("/v/stall", 504, "upstream_timeout")
        self.assertLess(time.time() - start, 5)  # response_timeout is 1.5 s
        self.assert_recovers()

    def truncated(self, path):
        c = self.gw.conn(timeout=20)
        start = time.time()
        try:
            c.request("GET", path)
            r = c.getresponse()
            self.assertEqual(r.status, 200)  # the head was relayed before the fault
            with self.assertRaises(http.client.IncompleteRead):
                r.read()
        finally:
            c.close()
        return time.time() - start

    def test_reset_mid_body(self):
        # The head is already with the caller: the only honest signal left is to end the
        # connection before the promised length, which the caller sees as a short body.
        self.truncated("/v/reset-mid-body")
        self.assert_recovers()

    def test_stall_mid_body(self):
        took = self.truncated("/v/stall-mid-body")
        self.assertLess(took, 10)
        self.assert_recovers()

    def test_pooled_connection_closed_as_it_is_reused(self):
        before = metric(self.gw, "gateway_upstream_retries_total")
        c = self.gw.conn()
        for _ in range(10):
            c.request("GET", "/v/close-on-reuse")
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            r.read()
        c.close()
        retries = metric(self.gw, "gateway_upstream_retries_total") - before
        print("\n[measure] vendor closing each pooled connection on reuse: 10 x 200, %d transparent "
              "retries on a fresh connection" % retries)
        self.assertGreaterEqual(retries, 8)
        # A POST is not sent twice: the caller gets a clear 502 instead.
        self.assertEqual(self.gw.request("GET", "/v/close-on-reuse")[0], 200)
        c = self.gw.conn()
        c.request("GET", "/v/close-on-reuse")
        c.getresponse().read()
        c.request("POST", "/v/close-on-reuse", body=b"x", headers={"Content-Length": "1"})
        r = c.getresponse()
        r.read()
        c.close()
        self.assertEqual(r.status, 502)
        self.assert_recovers()


class CrossCallerTest(WithBrokenVendor):
    """Issue 13.1: a vendor that writes past its answer's end (a body on HEAD, 204 or 304,
    bytes after a framed body, early or late) must never have those bytes taken as the next
    caller's answer: the pooled connection is closed, not handed on."""
    threads = 1  # one pool: the next request would get the very connection the stray bytes are on

    def test_stray_bytes_never_reach_another_caller(self):
        cases = [("HEAD", "/v/extra-bytes"), ("HEAD", "/v/extra-bytes?late=1"),
                 ("GET", "/v/extra-bytes?status=204"), ("GET", "/v/extra-bytes?status=304"),
                 ("GET", "/v/extra-bytes?status=204&late=1"),
                 ("GET", "/v/extra-bytes?status=304&late=1"),
                 ("GET", "/v/extra-bytes?after=1"), ("GET", "/v/extra-bytes?after=1&late=1"),
                 ("HEAD", "/v/extra-bytes?status=204")]
        crossed = []
        for method, path in cases:
            for _ in range(3):
                a = self.gw.conn(timeout=10)
                a.request(method, path)
                r = a.getresponse()
                r.read()
                a.close()
                if "late" in path:
                    time.sleep(0.1)  # the stray bytes are on the idle connection now
                # Another caller, on its own connection, right after.
                b = self.gw.conn(timeout=10)
                b.request("GET", "/v/ok")
                rb = b.getresponse()
                body = rb.read()
                b.close()
                try:
                    own = rb.status == 200 and json.loads(body).get("path") == "/ok"
                except ValueError:
                    own = False
                if not own:
                    crossed.append((method, path, rb.status, body[:80]))
        self.assertEqual(crossed, [], "answers that were not the caller's own")
        self.assertNotIn(b"stolen", b"".join(open(self.gw.log_path, "rb").readlines()))


class DeadlineTest(unittest.TestCase):
    """The caller's idle_timeout guards each read and write on its connection, not the time
    the vendor takes: a slow but healthy vendor (within response_timeout) is relayed whole,
    while an idle keep-alive connection is still closed once idle_timeout has passed."""

    @classmethod
    def setUpClass(cls):
        cls.vendor = BrokenVendor(CERT, KEY).start()
        cfg = gateway_config(cls.vendor, idle_timeout="1s", header_timeout="1s")
        cfg["upstream"]["response_timeout"] = "3s"
        cls.gw = Gateway(W.path, cfg, name="deadlines").start()

    @classmethod
    def tearDownClass(cls):
        cls.gw.stop()
        cls.vendor.stop()

    def test_vendor_slower_than_the_caller_idle_timeout(self):
        c = self.gw.conn(timeout=10)
        try:
            # Not the first request on the connection: the wait for it was under idle_timeout.
            c.request("GET", "/v/ok")
            c.getresponse().read()
            c.request("GET", "/v/slow-answer")
            r = c.getresponse()
            self.assertEqual((r.status, r.read()), (200, b"slow"))
            # The answer to a slowly uploaded body: each piece comes within idle_timeout.
            c.putrequest("POST", "/v/slow-answer")
            c.putheader("Content-Length", "12")
            c.endheaders()
            for piece in (b"1234", b"5678", b"9abc"):
                time.sleep(0.6)
                c.send(piece)
            r = c.getresponse()
            self.assertEqual((r.status, r.read()), (200, b"slow"))
        finally:
            c.close()

    def test_answer_streamed_slower_than_the_caller_idle_timeout(self):
        status, _, body = self.gw.request("GET", "/v/slow-stream")
        self.assertEqual((status, body), (200, b"aaaabbbbcccc"))

    def test_idle_keep_alive_connection_is_closed(self):
        s = socket.create_connection(("127.0.0.1", self.gw.port), timeout=5)
        try:
            s.sendall(b"GET /v/ok HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = s.recv(65536)
            self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:100])
            start = time.time()
            rest = s.recv(65536)  # blocks until the gateway closes the idle connection
            took = time.time() - start
        finally:
            s.close()
        self.assertEqual(rest, b"")
        self.assertGreater(took, 0.8)
        self.assertLess(took, 3)

    def test_head_must_arrive_within_header_timeout(self):
        out, took, closed = exchange(self.gw.port, b"GET /v/ok HTTP/1.1\r\nHost: x\r\n", timeout=5)
        self.assertTrue(out.startswith(b"HTTP/1.1 408"), out[:100])
        self.assertTrue(closed)
        self.assertLess(took, 3)


if __name__ == "__main__":
    unittest.main()
