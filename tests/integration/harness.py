"""Test harness: a CA made at test time, vendor simulators over TLS, and the real gateway
binary, all on 127.0.0.1 with ephemeral ports, started and stopped by the tests."""
import atexit
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("GATEWAY_SOURCE_DIR", os.path.abspath(os.path.join(HERE, "..", "..")))
GATEWAY_BIN = os.environ.get("GATEWAY_BIN", os.path.join(SOURCE, "build", "gateway"))
SIM = os.path.join(SOURCE, "tests", "fakes", "vendor_sim.py")
POLICIES = os.path.join(SOURCE, "policies")

# Every secret the tests hand to the gateway or get from the simulators; the secret scan
# looks for each of them in everything the gateway printed or wrote.
SECRETS = set()


def secret(value):
    SECRETS.add(value)
    return value


def run(cmd, **kw):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


class CA:
    """A throwaway certificate authority and server certificates made with openssl."""

    def __init__(self, workdir, name="Test CA"):
        self.dir = os.path.join(workdir, name.replace(" ", "_"))
        os.makedirs(self.dir, exist_ok=True)
        self.key = os.path.join(self.dir, "ca.key")
        self.cert = os.path.join(self.dir, "ca.pem")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", self.key, "-out", self.cert, "-days", "2",
             "-subj", "/CN=" + name])

    def issue(self, name, sans, usage="serverAuth"):
        """A certificate for `sans` (e.g. 'IP:127.0.0.1,DNS:localhost'); `usage` is its
        extended key usage (serverAuth, or clientAuth for a caller's certificate)."""
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        cert = os.path.join(self.dir, name + ".pem")
        ext = os.path.join(self.dir, name + ".ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=" + sans + "\nextendedKeyUsage=" + usage + "\n")
        run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", csr, "-subj", "/CN=" + name])
        run(["openssl", "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
             "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext])
        return cert, key


_children = []


def spawn(*args, **kw):
    """subprocess.Popen, remembered so that a test that fails before its cleanup still leaves
    no simulator or gateway running (ctest waits on their inherited pipes)."""
    proc = subprocess.Popen(*args, **kw)
    _children.append(proc)
    return proc


@atexit.register
def _reap_children():
    for proc in _children:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def read_json_line(proc, timeout=10):
    """The first stdout line of a process, parsed as JSON."""
    result = {}

    def reader():
        result["line"] = proc.stdout.readline()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    if "line" not in result or not result["line"]:
        raise RuntimeError("process printed nothing")
    return json.loads(result["line"])


class Sim:
    """One vendor simulator process."""

    def __init__(self, vendor, cert, key, *extra):
        self.vendor = vendor
        self.proc = spawn(
            [sys.executable, SIM, "--vendor", vendor, "--cert", cert, "--key", key,
             "--client-secret", secret("cs-" + vendor + "-" + os.urandom(6).hex()), *extra],
            stdout=subprocess.PIPE, text=True)
        self.client_secret = [a for a in self.proc.args if a.startswith("cs-")][0]
        self.port = read_json_line(self.proc)["port"]
        self.url = "https://127.0.0.1:%d" % self.port
        self.ca_file = None

    def control(self, path, body=None, ca_file=None):
        import ssl
        ctx = ssl.create_default_context(cafile=ca_file or self.ca_file)
        ctx.check_hostname = False
        if not ca_file and not self.ca_file:
            ctx.verify_mode = ssl.CERT_NONE
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data,
                                     method="POST" if data is not None else "GET")
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return json.loads(r.read())

    def state(self):
        return self.control("/_sim/state")

    def requests(self):
        return self.control("/_sim/requests")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def to_yaml(value, indent=0):
    """JSON is YAML; written with one key per line so errors point at a line."""
    return json.dumps(value, indent=2)


class Gateway:
    """The real gateway binary with a config written by the test."""

    def __init__(self, workdir, config, env=None, name="gateway"):
        self.workdir = workdir
        self.config_path = os.path.join(workdir, name + ".yaml")
        self.log_path = os.path.join(workdir, name + ".log")
        self.config = config
        self.write_config(config)
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        self.lines = []
        self.port = None
        self.admin_port = None

    def write_config(self, config):
        with open(self.config_path, "w") as f:
            f.write(to_yaml(config))

    def start(self, timeout=15, preexec_fn=None):
        self.log_file = open(self.log_path, "a")
        self.proc = spawn([GATEWAY_BIN, "--config", self.config_path],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=self.env, preexec_fn=preexec_fn)
        self.started = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if not self.started.wait(timeout):
            self.stop()
            raise RuntimeError("gateway did not start:\n" + "".join(self.lines[-20:]))
        return self

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            self.log_file.write(line)
            self.log_file.flush()
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get("msg") == "gateway started":
                self.port = int(obj["listen"].rsplit(":", 1)[1])
                self.admin_port = int(obj["admin"].rsplit(":", 1)[1])
                self.started.set()

    def json_lines(self):
        out = []
        for line in list(self.lines):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def access_log(self):
        return [l for l in self.json_lines() if l.get("type") == "access"]

    def wait_lines(self, predicate, count=1, timeout=3):
        """The JSON lines matching `predicate`, once at least `count` arrived (log lines are
        written after the answer and read by another thread, so they may trail it)."""
        deadline = time.time() + timeout
        while True:
            found = [l for l in self.json_lines() if predicate(l)]
            if len(found) >= count or time.time() > deadline:
                return found
            time.sleep(0.02)

    def metrics_text(self, timeout=5):
        """The admin port's /metrics, as Prometheus would scrape it."""
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.admin_port,
                                    timeout=timeout) as r:
            return r.read().decode()

    def conn(self, timeout=30):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=30):
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, dict(r.getheaders()), data
        finally:
            c.close()

    def raw(self, data, timeout=10, read_all=True):
        """Sends raw bytes; returns everything the gateway answered until it closed."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        try:
            s.sendall(data)
            chunks = []
            while True:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
                if not read_all:
                    break
            return b"".join(chunks)
        finally:
            s.close()

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(25)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.reader.join(5)
            self.log_file.close()
            # A sanitizer build reports on stderr (merged into the log): any report fails.
            starts = [i for i, l in enumerate(self.lines) if "Sanitizer" in l or "runtime error:" in l]
            if starts:
                report = self.lines[starts[0]:starts[0] + 80]
                raise AssertionError("sanitizer report from the gateway:\n" + "".join(report))
        return self.proc.returncode if self.proc else None


def stop_all(processes):
    """Stops every process (an object with stop(), or a callable), then raises the first
    failure: one sanitizer report must not leave the others running (ctest would wait on
    their inherited pipes until its timeout)."""
    first = None
    for p in processes:
        try:
            p() if callable(p) else p.stop()
        except Exception as e:  # noqa: BLE001 - re-raised below after the rest are stopped
            first = first or e
    if first:
        raise first


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Redis:
    """A real redis-server on 127.0.0.1 (no persistence unless `extra` asks for it), started
    on `port` or a free one; `extra` adds server arguments (TLS, replicaof, ...)."""

    def __init__(self, workdir, port=None, extra=(), cli_args=(), tls=None):
        """`tls`: {"cert", "key", "ca", "client_cert", "client_key"}: TLS only, on `port`,
        clients must present a certificate from `ca`."""
        self.port = port or free_port()
        self.dir = os.path.join(workdir, "redis-%d" % self.port)
        self.cli_args = list(cli_args)
        os.makedirs(self.dir, exist_ok=True)
        ports = ["--port", str(self.port)]
        if tls:
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", tls["cert"],
                     "--tls-key-file", tls["key"], "--tls-ca-cert-file", tls["ca"],
                     "--tls-auth-clients", "yes"]
            self.cli_args = ["--tls", "--cacert", tls["ca"], "--cert", tls["client_cert"],
                             "--key", tls["client_key"], *self.cli_args]
        self.proc = spawn(
            ["redis-server", *ports, "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.cli("PING").strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def cli(self, *args):
        r = subprocess.run(["redis-cli", "-p", str(self.port), *self.cli_args, *args],
                           capture_output=True, text=True)
        return r.stdout

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a paused one too
            self.proc.kill()
        self.proc.wait()


def traffic(gws, pause, count=None, seconds=None):
    """Each gateway gets its own client sending GET /chime/v1/leads on one keep-alive
    connection, `count` times or for `seconds`; returns every status, in no order."""
    statuses = []
    lock = threading.Lock()
    start = time.time()

    def worker(gw):
        c = gw.conn(timeout=30)
        n = 0
        while (count is None or n < count) and (seconds is None or time.time() - start < seconds):
            c.request("GET", "/chime/v1/leads")
            r = c.getresponse()
            r.read()
            with lock:
                statuses.append(r.status)
            n += 1
            time.sleep(pause)
        c.close()

    threads = [threading.Thread(target=worker, args=(gw,)) for gw in gws]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def peak_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def base_config(ca_file, store_dir):
    """A gateway config on ephemeral ports with the memory store and no integrations."""
    return {
        "listen": {"address": "127.0.0.1", "port": 0},
        "admin": {"address": "127.0.0.1", "port": 0},
        "threads": 2,
        "policies": [POLICIES],
        "store": {"kind": "memory"},
        "upstream": {"ca_file": ca_file, "connect_timeout": "2s", "response_timeout": "10s"},
        "log": {"level": "debug"},
        "integrations": [],
        "connections": [],
    }


def scan_for_secrets(paths, extra=()):
    """Returns (path, secret) pairs for every known secret found in the files."""
    found = []
    needles = [s for s in SECRETS.union(extra) if s]
    for path in paths:
        if not os.path.exists(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        for s in needles:
            if s.encode() in data:
                found.append((path, s))
    return found


# Tokens, refresh tokens and codes the simulators mint (tests/fakes/vendor_sim.py).
MINTED = re.compile(rb"(at|rt|code)-[0-9a-f]{24,32}")


def scan_tree(root):
    """Everything the gateway wrote under `root` (its logs and token stores): returns
    (path, what) for each secret the tests used and each token a simulator minted."""
    found = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            if not (name.endswith(".log") or name.endswith(".db")):
                continue
            path = os.path.join(dirpath, name)
            found += scan_for_secrets([path])
            with open(path, "rb") as f:
                for m in MINTED.finditer(f.read()):
                    found.append((path, m.group(0).decode()))
    return found


class Workdir:
    """A temporary folder for one test module. On exit, everything the gateway captured
    there is checked for secrets; any found fails the module (exit status 1)."""

    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="gwtest-")
        atexit.register(self.cleanup)

    def cleanup(self):
        leaks = scan_tree(self.path)
        if not os.environ.get("GATEWAY_KEEP_TEST_FILES"):
            shutil.rmtree(self.path, ignore_errors=True)
        if leaks:
            sys.stderr.write("SECRETS FOUND in what the gateway wrote: %r\n" % leaks[:10])
            os._exit(1)
