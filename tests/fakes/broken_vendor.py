"""A vendor that misbehaves on purpose, over TLS, for the hostile-vendor tests. The request
path chooses the fault:

  /ok               200 with a small JSON body naming the path, keep-alive
  /reset-mid-body   a head promising 100,000 bytes, 1,000 of them, then a TCP reset
  /garbage          bytes that are not HTTP, then close
  /stall            reads the request and never answers
  /stall-mid-body   a head promising 1,000 bytes, 10 of them, then nothing
  /huge-header      a 200 whose head carries a 100 KiB header
  /chunked-slowly   a chunked 200 "hello world" whose chunk sizes, data and end arrive apart
  /close-on-reuse   answers the first request of a connection (keep-alive) and closes the
                    connection, unanswered, when a second request arrives on it
  /close           a 200 with Connection: close, then a clean close (a vendor's load
                    balancer ending each connection); `handshakes()` counts full and resumed
                    TLS handshakes
  /slow-answer      a healthy 200, after 1.8 s
  /slow-stream      a healthy 200 whose 3 body pieces arrive 1.3 s apart
  /extra-bytes      an answer followed by bytes past its end, on a kept-alive connection:
                    ?status=204|304 answers that status with a body anyway (so does HEAD on
                    any of them), ?after=1 sends a whole 2-byte answer first, ?late=1 sends the stray bytes 50 ms later, in their own
                    TLS record. The stray bytes look like a whole answer for another caller.

  /echo-location    a 302 whose Location and Link carry the request's query back as received
                    (a vendor echoing the URL: the injected query credential must not return)
  /trace            answers any method, TRACE included, with the request head as its body
  /always-401       401 whatever the token (an endpoint the account may not use)
  /revoke           200 with an empty body (RFC 7009); last("/revoke") has what was sent
  /frame?kind=K     vendor-controlled framing: conn-cl (Connection: Content-Length), gzip-te
                    (Transfer-Encoding: gzip, chunked), switch (a 101), gw-error (a vendor's own
                    X-Gateway-Error), odd-cl (Content-Length: 0004)

Runs in a thread of the test process (start(), stop()); `stats` counts connections and
requests by path. Listens on 127.0.0.1 only.
"""
import json
import socket
import ssl
import struct
import threading
import time


class BrokenVendor:
    def __init__(self, cert, key):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.url = "https://127.0.0.1:%d" % self.port
        self.lock = threading.Lock()
        self.stats = {"connections": 0, "requests": {}, "full": 0, "resumed": 0}
        self.stopping = False
        self.open = []

    def start(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self):
        self.stopping = True
        self.sock.close()
        with self.lock:
            for s in self.open:
                try:
                    s.close()
                except OSError:
                    pass

    def count(self, path):
        with self.lock:
            return self.stats["requests"].get(path, 0)

    def last(self, path):
        """The head and body of the last request for `path`."""
        with self.lock:
            return self.stats.get("last", {}).get(path)

    def handshakes(self):
        """(full, resumed) TLS handshakes so far."""
        with self.lock:
            return self.stats["full"], self.stats["resumed"]

    def connections(self):
        with self.lock:
            return self.stats["connections"]

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.stats["connections"] += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, raw):
        try:
            s = self.ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        with self.lock:
            self.open.append(s)
            self.stats["resumed" if s.session_reused else "full"] += 1
        buf = b""
        served = 0
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = s.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target = lines[0].split(" ")[0], lines[0].split(" ")[1]
                path, _, query = target.partition("?")
                length = 0
                chunked = False
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                    if name.strip().lower() == "transfer-encoding":
                        chunked = True
                while chunked and b"0\r\n\r\n" not in buf:  # enough for the tests' bodies
                    chunk = s.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                if chunked:
                    buf = buf.partition(b"0\r\n\r\n")[2]
                while len(buf) < length:
                    chunk = s.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                body, buf = buf[:length], buf[length:]
                with self.lock:
                    self.stats["requests"][path] = self.stats["requests"].get(path, 0) + 1
                    self.stats.setdefault("last", {})[path] = (head, body)
                if path in ("/echo-location", "/trace", "/frame"):
                    self._mirror(s, method, target, head, query)
                    served += 1
                    continue
                if path == "/extra-bytes":
                    self._extra_bytes(s, method, query)
                    served += 1
                    continue
                if not self._answer(s, path, served):
                    return
                served += 1
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                s.close()
            except OSError:
                pass

    def _answer(self, s, path, served):
        """Answers one request; False closes the connection."""
        if path == "/close-on-reuse" and served > 0:
            return False
        if path in ("/ok", "/close-on-reuse"):
            body = json.dumps({"path": path, "served_on_connection": served}).encode()
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            return True
        if path == "/close":
            s.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
            return False
        if path == "/slow-answer":
            time.sleep(1.8)
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
            return True
        if path == "/slow-stream":
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n")
            for piece in (b"aaaa", b"bbbb", b"cccc"):
                time.sleep(1.3)
                s.sendall(piece)
            return True
        if path == "/chunked-slowly":
            s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            for piece in (b"6\r\n", b" world", b"\r\n", b"0\r\n\r\n"):
                time.sleep(0.05)  # each piece its own TLS record
                s.sendall(piece)
            return True
        if path == "/reset-mid-body":
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"r" * 1000)
            # SO_LINGER 0: close() sends a TCP reset instead of a clean end.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if path == "/garbage":
            s.sendall(b"\x00\x01NOT HTTP AT ALL\r\n\r\n")
            return False
        if path == "/stall":
            self._wait_for_close(s)
            return False
        if path == "/stall-mid-body":
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"s" * 10)
            self._wait_for_close(s)
            return False
        if path == "/revoke":
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            return True
        if path == "/always-401":
            s.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
            return True
        if path == "/huge-header":
            s.sendall(b"HTTP/1.1 200 OK\r\nX-Huge: " + b"h" * (100 * 1024) +
                      b"\r\nContent-Length: 2\r\n\r\nok")
            return True
        s.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        return True

    def _mirror(self, s, method, target, head, query):
        """Answers that reflect the request, or frame themselves oddly."""
        params = dict(p.partition("=")[::2] for p in query.split("&") if p)
        if target.startswith("/echo-location"):
            s.sendall(b"HTTP/1.1 302 Found\r\nLocation: https://vendor.example/cb?%s\r\n"
                      b"Link: <https://vendor.example/next?%s>; rel=next\r\n"
                      b"Content-Length: 0\r\n\r\n" % (query.encode(), query.encode()))
        elif target.startswith("/trace"):
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: message/http\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(head), head))
        else:
            kind = params.get("kind")
            body = json.dumps({"path": "/frame", "kind": kind}).encode()
            if kind == "conn-cl":
                s.sendall(b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            elif kind == "gzip-te":
                s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                          b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
            elif kind == "switch":
                s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
                          b"Connection: Upgrade\r\n\r\n" + body)
            elif kind == "gw-error":
                s.sendall(b"HTTP/1.1 503 Service Unavailable\r\nX-Gateway-Error: shutting_down\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            else:  # odd-cl
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0004\r\n\r\nabcd")

    def _extra_bytes(self, s, method, query):
        """An answer, then bytes past its end that look like an answer to someone else."""
        params = dict(p.partition("=")[::2] for p in query.split("&") if p)
        status = params.get("status", "200")
        reason = {"200": "OK", "204": "No Content", "304": "Not Modified"}[status]
        stray = json.dumps({"path": "/stolen", "secret_of": "another caller"}).encode()
        stray_answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(stray), stray))
        head = b"HTTP/1.1 %s %s\r\nContent-Length: %d\r\n\r\n" % (
            status.encode(), reason.encode(), len(stray_answer))
        if params.get("after"):  # a whole, framed answer, then the stray bytes
            head = b"HTTP/1.1 %s %s\r\nContent-Length: 2\r\n\r\nok" % (
                status.encode(), reason.encode())
        if params.get("late"):
            s.sendall(head)
            time.sleep(0.05)
            s.sendall(stray_answer)
        else:
            s.sendall(head + stray_answer)

    def _wait_for_close(self, s):
        s.settimeout(60)
        try:
            while s.recv(65536):
                pass
        except (OSError, ssl.SSLError):
            pass
