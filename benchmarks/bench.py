#!/usr/bin/env python3
"""Side-by-side proxy benchmark: wrk through nginx, haproxy and the gateway to the same
upstream (nginx, 1 worker, a 103-byte answer over TLS with a CA made here), each proxy
injecting the same Bearer header, interleaved round by round. Prints req/s, p50/p99 and the
proxy's CPU microseconds per request, each as a ratio to haproxy in the same round.

  python3 benchmarks/bench.py [--duration 10] [--rounds 3] [--connections 64,256]
                              [--baseline OLD_GATEWAY_BINARY]

--baseline adds a second gateway binary (e.g. one built from the commit before a change) as
"baseline 1t/2t", measured in the same interleaved rounds: before and after in one run.

Everything listens on 127.0.0.1; nothing leaves the machine. The gateway forwards to HTTPS
upstreams only (its contract), so the plain-upstream column of the issue is not measured.
"""
import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GATEWAY = os.environ.get("GATEWAY_BIN", os.path.join(ROOT, "build", "gateway"))
BODY = "x" * 103
TOKEN = "bench-" + os.urandom(8).hex()


def port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(p, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", p), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on %d" % p)


def cpu_seconds(pids):
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return total


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children(pid):
    out = [pid]
    try:
        for line in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split():
            out.append(int(line))
    except OSError:
        pass
    return out


def stop(procs):
    """SIGTERM to each process still running, then SIGKILL to any not gone within 10 s."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def make_certs(d, extra_san=""):
    def run(*a):
        subprocess.run(a, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", d + "/ca.key", "-out", d + "/ca.pem", "-days", "1", "-subj", "/CN=bench CA")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", d + "/up.key", "-out", d + "/up.csr", "-subj", "/CN=upstream")
    with open(d + "/up.ext", "w") as f:
        # nginx and haproxy check the DNS name, the gateway the IP literal it connects to.
        f.write("subjectAltName=DNS:upstream.bench,IP:127.0.0.1%s\n" % extra_san)
    run("openssl", "x509", "-req", "-in", d + "/up.csr", "-CA", d + "/ca.pem", "-CAkey", d + "/ca.key",
        "-CAcreateserial", "-out", d + "/up.pem", "-days", "1", "-extfile", d + "/up.ext")


def nginx(d, name, server_block, worker_connections=4096):
    conf = os.path.join(d, name + ".conf")
    with open(conf, "w") as f:
        f.write("""worker_processes 1; daemon off; pid %s/%s.pid; error_log %s/%s.err warn;
worker_rlimit_nofile 65536;
events { worker_connections %d; }
http { access_log off; keepalive_requests 1000000;
%s }
""" % (d, name, d, name, worker_connections, server_block))
    return subprocess.Popen(["nginx", "-c", conf, "-p", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def upstream_accepted(status_port):
    """Connections the upstream nginx has accepted so far (stub_status)."""
    with urllib.request.urlopen("http://127.0.0.1:%d/" % status_port, timeout=5) as r:
        return int(r.read().decode().split("\n")[2].split()[0])


def wrk(url, connections, duration, timeout=None):
    extra = ["--timeout", timeout] if timeout else []
    r = subprocess.run(["wrk", "-t2", "-c%d" % connections, "-d%ds" % duration, "--latency"] + extra + [url],
                       capture_output=True, text=True)
    return parse_wrk(r.stdout)


def ms(value, unit):
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def parse_wrk(out):
    """req/s, request count, p50/p99/max latency (ms) and non-2xx count from wrk --latency."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))

    def pct(p):
        m = re.search(r"\s%s%%\s+([\d.]+)(us|ms|s)" % p, out)
        return ms(float(m.group(1)), m.group(2))

    worst = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": rps, "requests": total, "p50": pct("50"), "p99": pct("99"),
            "max": ms(float(worst.group(1)), worst.group(2)),
            "non2xx": int(errors.group(1)) if errors else 0,
            "errors": sum(int(g) for g in sock.groups()) if sock else 0}


def upstream_nginx(d, up, status_port=None):
    """The upstream every proxy forwards to: nginx, 1 worker, TLS, a BODY-byte answer."""
    status = ("\nserver { listen 127.0.0.1:%d; location / { stub_status; } }" % status_port
              if status_port else "")
    return nginx(d, "upstream", """server { listen 127.0.0.1:%d ssl; ssl_certificate %s/up.pem;
  ssl_certificate_key %s/up.key; location / { return 200 '%s'; } }""" % (up, d, d, BODY) + status)


def haproxy(d, threads, listen, up, host="127.0.0.1"):
    """haproxy with `threads` threads injecting the Bearer header, TLS to the upstream."""
    cfg = os.path.join(d, "haproxy%d.cfg" % threads)
    with open(cfg, "w") as f:
        f.write("""global
  nbthread %d
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:%d
  http-request set-header Authorization "Bearer %s"
  default_backend be
backend be
  server up %s:%d ssl verify required ca-file %s/ca.pem verifyhost upstream.bench sni str(upstream.bench) alpn http/1.1
""" % (threads, listen, TOKEN, host, up, d))
    return subprocess.Popen(["haproxy", "-f", cfg], stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(d, "haproxy%d.err" % threads), "w"))


def gateway_config(d, threads, listen, admin, up, label="gateway", host="127.0.0.1",
                   upstream=None):
    """The gateway injecting the same Bearer token (a static Chime connection). `upstream`:
    the upstream section (default: this benchmark's, which keeps 512 idle connections)."""
    cfg = {"listen": {"address": "127.0.0.1", "port": listen},
           "admin": {"address": "127.0.0.1", "port": admin}, "threads": threads,
           "policies": [os.path.join(ROOT, "policies")], "store": {"kind": "memory"},
           "upstream": upstream or {"ca_file": d + "/ca.pem", "max_idle_per_host": 512},
           "log": {"level": "warn", "access_log": False},
           "limits": {"max_connections": 20000},
           "integrations": [{"name": "v", "policy": "chime",
                             "overrides": {"upstream": "https://%s:%d" % (host, up)}}],
           "connections": [{"id": "a", "integration": "v", "grant": "static",
                            "credentials": {"access_token": TOKEN}}]}
    path = os.path.join(d, "%s%d.yaml" % (label, threads))
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", default="64,256")
    ap.add_argument("--baseline", help="another gateway binary to measure beside this one")
    args = ap.parse_args()
    for tool in ("nginx", "haproxy", "wrk"):
        if not shutil.which(tool):
            sys.exit("%s is missing: run scripts/setup.sh" % tool)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    d = tempfile.mkdtemp(prefix="gwbench-")
    make_certs(d)
    procs = []
    up, status_port = port(), port()
    procs.append(upstream_nginx(d, up, status_port))
    ng = port()
    procs.append(nginx(d, "proxy", """upstream vendor { server 127.0.0.1:%d; keepalive 256; }
server { listen 127.0.0.1:%d; location / {
  proxy_pass https://vendor; proxy_http_version 1.1; proxy_set_header Connection "";
  proxy_set_header Authorization "Bearer %s"; proxy_ssl_verify on;
  proxy_ssl_trusted_certificate %s/ca.pem; proxy_ssl_name upstream.bench; proxy_ssl_server_name on; proxy_ssl_session_reuse on; } }"""
                       % (up, ng, TOKEN, d)))
    proxies = {"nginx 1w": ("nginx", ng, procs[-1])}
    for threads in (1, 2):
        hp = port()
        procs.append(haproxy(d, threads, hp, up))
        proxies["haproxy %dt" % threads] = ("haproxy", hp, procs[-1])
    binaries = [("gateway", GATEWAY)] + ([("baseline", args.baseline)] if args.baseline else [])
    for label, binary in binaries:
        for threads in (1, 2):
            gp = port()
            path = gateway_config(d, threads, gp, port(), up, label)
            p = subprocess.Popen([binary, "--config", path], stdout=subprocess.DEVNULL)
            procs.append(p)
            proxies["%s %dt" % (label, threads)] = ("gateway", gp, p)
    try:
        time.sleep(0.5)
        for name, (kind, p, proc) in proxies.items():
            if proc.poll() is not None:
                err = os.path.join(d, kind + name.split()[-1].rstrip("tw") + ".err")
                sys.exit("%s exited at start: %s" % (name, open(err).read() if os.path.exists(err) else "?"))
            wait_port(p)
        wait_port(up)
        idle_rss = {name: rss_kib(proc.pid) for name, (kind, p, proc) in proxies.items()
                    if kind == "gateway"}
        results = {}
        conns = [int(c) for c in args.connections.split(",")]
        for rnd in range(args.rounds):
            for c in conns:
                for name, (kind, p, proc) in proxies.items():
                    path = "/v/bench" if kind == "gateway" else "/bench"
                    wrk("http://127.0.0.1:%d%s" % (p, path), c, 1)  # warm the pools
                    pids = children(proc.pid)
                    before = cpu_seconds(pids)
                    # Steady state: upstream connections opened between 1 s into the run and
                    # 0.5 s before its end (the warm-up's callers hang up mid-request, which
                    # costs any proxy a few pooled connections at the start).
                    counts = []
                    timer = threading.Timer(1.0, lambda: counts.append(upstream_accepted(status_port)))
                    timer2 = threading.Timer(args.duration - 0.5,
                                             lambda: counts.append(upstream_accepted(status_port)))
                    timer.start()
                    timer2.start()
                    res = wrk("http://127.0.0.1:%d%s" % (p, path), c, args.duration)
                    timer.join()
                    timer2.join()
                    res["cpu_us"] = (cpu_seconds(pids) - before) / max(res["requests"], 1) * 1e6
                    res["new_upstream"] = counts[1] - counts[0] - 1  # minus the status call itself
                    results.setdefault((name, c), []).append(res)
                    print("round %d, %s, c%d: %.0f req/s, p99 %.2f ms, %.1f us CPU/req, %d non-2xx, "
                          "%d new upstream connections" % (rnd + 1, name, c, res["rps"], res["p99"],
                                                           res["cpu_us"], res["non2xx"], res["new_upstream"]),
                          file=sys.stderr)
        print("\nProxy benchmark: TLS upstream (nginx 1 worker, %d-byte answer), wrk -t2, %d s x %d rounds, medians"
              % (len(BODY), args.duration, args.rounds))
        print("| proxy | conns | req/s | vs haproxy | p50 ms | p99 ms | vs haproxy | CPU us/req | vs haproxy | non-2xx | new upstream conns |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for c in conns:
            for name in proxies:
                rs = results[(name, c)]
                med = {k: statistics.median(r[k] for r in rs)
                       for k in ("rps", "p50", "p99", "cpu_us", "non2xx", "new_upstream")}
                threads = name.split()[-1]
                ref_name = "haproxy 2t" if threads in ("2t",) else "haproxy 1t"
                ref = {k: statistics.median(r[k] for r in results[(ref_name, c)]) for k in ("rps", "p99", "cpu_us")}
                print("| %s | %d | %.0f | %.2fx | %.2f | %.2f | %.2fx | %.1f | %.2fx | %d | %d |"
                      % (name, c, med["rps"], med["rps"] / ref["rps"], med["p50"], med["p99"],
                         med["p99"] / ref["p99"], med["cpu_us"], med["cpu_us"] / ref["cpu_us"], med["non2xx"],
                         med["new_upstream"]))
        # RSS with 1,000 open keep-alive callers, each having made one request.
        print("\nGateway memory (VmRSS): idle at start, and with 1,000 open keep-alive callers")
        print("| proxy | idle MiB | 1,000 callers MiB |")
        print("|---|---|---|")
        for name, (kind, p, proc) in proxies.items():
            if kind != "gateway":
                continue
            held = []
            for _ in range(1000):
                sock = socket.create_connection(("127.0.0.1", p), timeout=10)
                sock.sendall(b"GET /v/rss HTTP/1.1\r\nHost: x\r\n\r\n")
                held.append(sock)
            for sock in held:
                sock.recv(65536)
            time.sleep(0.5)
            print("| %s | %.1f | %.1f |" % (name, idle_rss[name] / 1024, rss_kib(proc.pid) / 1024))
            for sock in held:
                sock.close()
    finally:
        stop(procs)
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
