#!/usr/bin/env python3
"""The real path's two costs, side by side for nginx, haproxy and the gateway (one worker or
thread each, interleaved round by round, ratios to haproxy from the same round):

  churn     The upstream closes each connection after 100 requests (keepalive_requests 100),
            as vendors' load balancers do; 256 and 1,000 callers; every proxy on its plain
            configuration (bench.py's, and the gateway's upstream section left at its
            defaults). The upstream's access log ($ssl_session_reused) gives new connections
            and full versus resumed handshakes per second.
  distance  The upstream in its own network namespace behind a veth pair with `tc netem`
            delay (25 ms each way), 2,000 keep-alive callers: req/s, p50/p99 added over wrk
            straight to the upstream, the proxy's peak RSS and the upstream connections it
            held. Needs root (ip netns); removes the namespace and the link when done.

  python3 benchmarks/shapes.py churn [--connections 256,1000] [--duration 10] [--rounds 3]
  python3 benchmarks/shapes.py distance [--connections 2000] [--duration 15] [--rounds 2]

--baseline OLD_GATEWAY_BINARY adds a second gateway (before and after in one run).

All traffic stays on this machine (loopback, and the veth pair the benchmark made).
"""
import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

NS = "gwbench-up"
HOST_IF, NS_IF = "gwb0", "gwb1"
HOST_IP, NS_IP = "10.213.7.1", "10.213.7.2"


def sh(*a, check=True):
    return subprocess.run(a, check=check, capture_output=True, text=True)


def upstream_conf(d, listen, log=True, keepalive_requests=None, protocols="TLSv1.3"):
    logging = ("log_format reuse '$ssl_session_reused $connection_requests';\n"
               "access_log %s/upstream.access reuse buffer=256k flush=1s;" % d) if log else "access_log off;"
    kr = "keepalive_requests %d;" % keepalive_requests if keepalive_requests else ""
    conf = os.path.join(d, "upstream.conf")
    with open(conf, "w") as f:
        f.write("""worker_processes 1; daemon off; pid %s/upstream.pid; error_log %s/upstream.err warn;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http { %s keepalive_requests 1000000; keepalive_timeout 120s;
server { listen %s ssl; ssl_protocols %s; ssl_certificate %s/up.pem; ssl_certificate_key %s/up.key;
  %s location / { return 200 '%s'; } } }
""" % (d, d, logging, listen, protocols, d, d, kr, bench.BODY))
    return conf


def nginx_proxy(d, listen, up_host, up):
    return bench.nginx(d, "proxy", """upstream vendor { server %s:%d; keepalive 256; }
server { listen 127.0.0.1:%d; location / {
  proxy_pass https://vendor; proxy_http_version 1.1; proxy_set_header Connection "";
  proxy_set_header Authorization "Bearer %s"; proxy_ssl_verify on;
  proxy_ssl_trusted_certificate %s/ca.pem; proxy_ssl_name upstream.bench; proxy_ssl_server_name on;
  proxy_ssl_session_reuse on; proxy_ssl_protocols TLSv1.2 TLSv1.3; } }"""
                       % (up_host, up, listen, bench.TOKEN, d), worker_connections=16384)


def start_proxies(d, up_host, up, baseline=None, gateway_upstream=None):
    procs, proxies = [], {}
    ng = bench.port()
    procs.append(nginx_proxy(d, ng, up_host, up))
    proxies["nginx 1w"] = ("nginx", ng, procs[-1])
    hp = bench.port()
    procs.append(bench.haproxy(d, 1, hp, up, host=up_host))
    proxies["haproxy 1t"] = ("haproxy", hp, procs[-1])
    for label, binary in [("gateway", bench.GATEWAY)] + ([("baseline", baseline)] if baseline else []):
        gp = bench.port()
        # Plain defaults: only the trust anchor the test CA needs (and what the shape adds).
        path = bench.gateway_config(d, 1, gp, bench.port(), up, label=label, host=up_host,
                                    upstream=dict({"ca_file": d + "/ca.pem"}, **(gateway_upstream or {})))
        procs.append(subprocess.Popen([binary, "--config", path], stdout=subprocess.DEVNULL))
        proxies["%s 1t" % label] = ("gateway", gp, procs[-1])
    time.sleep(0.5)
    for name, (kind, p, proc) in proxies.items():
        if proc.poll() is not None:
            sys.exit("%s exited at start" % name)
        bench.wait_port(p)
    return procs, proxies


def access_lines(d):
    try:
        with open(os.path.join(d, "upstream.access")) as f:
            return f.readlines()
    except OSError:
        return []


def churn(args, d):
    bench.make_certs(d)
    up = bench.port()
    upstream = subprocess.Popen(["nginx", "-c", upstream_conf(d, "127.0.0.1:%d" % up, keepalive_requests=100),
                                 "-p", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench.wait_port(up)
    procs, proxies = start_proxies(d, "127.0.0.1", up, args.baseline)
    procs.append(upstream)
    results = {}
    conns = [int(c) for c in args.connections.split(",")]
    try:
        for rnd in range(args.rounds):
            for c in conns:
                for name, (kind, p, proc) in proxies.items():
                    path = "/v/bench" if kind == "gateway" else "/bench"
                    bench.wrk("http://127.0.0.1:%d%s" % (p, path), c, 1)  # warm up
                    time.sleep(1.2)  # the upstream log flushes every second
                    seen = len(access_lines(d))
                    pids = bench.children(proc.pid)
                    before = bench.cpu_seconds(pids)
                    res = bench.wrk("http://127.0.0.1:%d%s" % (p, path), c, args.duration)
                    res["cpu_us"] = (bench.cpu_seconds(pids) - before) / max(res["requests"], 1) * 1e6
                    time.sleep(1.2)
                    lines = access_lines(d)[seen:]
                    new = [line.split()[0] for line in lines if line.split()[1] == "1"]
                    res["new_per_s"] = len(new) / args.duration
                    res["resumed_per_s"] = sum(1 for r in new if r == "r") / args.duration
                    res["full_per_s"] = res["new_per_s"] - res["resumed_per_s"]
                    res["resumed_share"] = res["resumed_per_s"] / res["new_per_s"] if new else 1.0
                    results.setdefault((name, c), []).append(res)
                    print("round %d, %s, c%d: %.0f req/s, p99 %.2f ms, %.1f us CPU/req, %d non-2xx, "
                          "%.0f new upstream conns/s (%.0f full, %.0f resumed)"
                          % (rnd + 1, name, c, res["rps"], res["p99"], res["cpu_us"], res["non2xx"],
                             res["new_per_s"], res["full_per_s"], res["resumed_per_s"]), file=sys.stderr)
    finally:
        bench.stop(procs)
    print("\nChurn: the upstream (nginx 1 worker, TLS 1.3, %d-byte answer) closes each connection after "
          "100 requests; wrk -t2, %d s x %d rounds, medians" % (len(bench.BODY), args.duration, args.rounds))
    print("| proxy | callers | req/s | vs haproxy | vs nginx | p50 ms | p99 ms | vs haproxy | CPU us/req | "
          "non-2xx | new upstream conns/s | full handshakes/s | resumed/s | resumed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    keys = ("rps", "p50", "p99", "cpu_us", "non2xx", "new_per_s", "full_per_s", "resumed_per_s", "resumed_share")
    for c in conns:
        med = {name: {k: statistics.median(r[k] for r in results[(name, c)]) for k in keys} for name in proxies}
        ref, ngx = med["haproxy 1t"], med["nginx 1w"]
        for name in proxies:
            m = med[name]
            print("| %s | %d | %.0f | %.2fx | %.2fx | %.2f | %.2f | %.2fx | %.1f | %d | %.0f | %.0f | %.0f | %.0f%% |"
                  % (name, c, m["rps"], m["rps"] / ref["rps"], m["rps"] / ngx["rps"], m["p50"], m["p99"],
                     m["p99"] / ref["p99"], m["cpu_us"], m["non2xx"], m["new_per_s"], m["full_per_s"],
                     m["resumed_per_s"], 100 * m["resumed_share"]))


def netns_up(delay_ms):
    netns_down()
    sh("ip", "netns", "add", NS)
    sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
    sh("ip", "link", "set", NS_IF, "netns", NS)
    sh("ip", "addr", "add", HOST_IP + "/30", "dev", HOST_IF)
    sh("ip", "link", "set", HOST_IF, "up")
    sh("ip", "netns", "exec", NS, "ip", "addr", "add", NS_IP + "/30", "dev", NS_IF)
    sh("ip", "netns", "exec", NS, "ip", "link", "set", NS_IF, "up")
    sh("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")
    # Delay each way; a queue long enough for every caller's packets (netem's default of
    # 1,000 packets would drop at 2,000 callers in flight). False when this kernel has no
    # netem (sch_netem not built): the caller puts delay_relay in front of the upstream.
    if sh("tc", "qdisc", "add", "dev", HOST_IF, "root", "netem", "delay", "%dms" % delay_ms,
          "limit", "100000", check=False).returncode != 0:
        return False
    sh("ip", "netns", "exec", NS, "tc", "qdisc", "add", "dev", NS_IF, "root", "netem", "delay",
       "%dms" % delay_ms, "limit", "100000")
    return True


def netns_down():
    sh("ip", "link", "del", HOST_IF, check=False)  # removes its peer too
    sh("ip", "netns", "del", NS, check=False)


def held_upstream(up, pids):
    """Upstream connections held by `pids` (None: by anyone, for wrk's direct path)."""
    out = sh("ss", "-Htnp", "state", "established", "dst", "%s:%d" % (NS_IP, up), check=False).stdout
    if pids is None:
        return sum(1 for line in out.splitlines() if line.strip())
    return sum(1 for line in out.splitlines() if any("pid=%d," % p in line for p in pids))


def distance(args, d):
    if os.geteuid() != 0:
        sys.exit("distance needs root: it makes a network namespace and a veth pair")
    bench.make_certs(d, extra_san=",IP:" + NS_IP)
    netem = netns_up(args.delay)
    procs = []
    try:
        up = bench.port()
        listen = "%s:%d" % (NS_IP, up)
        if not netem:
            # No netem here: the upstream listens on the namespace's loopback and delay_relay,
            # in the namespace too, holds each chunk args.delay ms each way in front of it.
            relay = os.path.join(d, "delay_relay")
            sh("cc", "-O2", "-o", relay, os.path.join(os.path.dirname(os.path.abspath(__file__)), "delay_relay.c"))
            inner = bench.port()
            listen = "127.0.0.1:%d" % inner
            procs.append(subprocess.Popen(["ip", "netns", "exec", NS, relay, NS_IP, str(up), "127.0.0.1",
                                           str(inner), str(args.delay)]))
            print("this kernel has no netem: %d ms each way added by delay_relay (a new connection's "
                  "TCP handshake is not delayed)" % args.delay, file=sys.stderr)
        procs.append(subprocess.Popen(["ip", "netns", "exec", NS, "nginx", "-c",
                                       upstream_conf(d, listen, log=False), "-p", d],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.time() + 10
        while time.time() < deadline and sh("ip", "netns", "exec", NS, "ss", "-Hltn", "sport",
                                             "= :%d" % (up if netem else inner)).stdout == "":
            time.sleep(0.1)
        # Room for as many vendor connections as callers: haproxy has maxconn 8000, the nginx
        # proxy worker_connections 16384; the gateway keeps its default max_per_host (512),
        # pass --max-per-host to change it.
        extra = {"max_per_host": args.max_per_host} if args.max_per_host else None
        more, proxies = start_proxies(d, NS_IP, up, args.baseline, extra)
        procs += more
        results = {}
        c = args.connections
        direct = "https://%s:%d/bench" % (NS_IP, up)
        targets = [("direct", ("direct", None, None))] + list(proxies.items())
        for rnd in range(args.rounds):
            for name, (kind, p, proc) in targets:
                url = direct if kind == "direct" else "http://127.0.0.1:%d%s" % (
                    p, "/v/bench" if kind == "gateway" else "/bench")
                bench.wrk(url, c, 5, timeout="10s")  # warm up: open the callers' and upstream connections
                pids = bench.children(proc.pid) if proc is not None else None
                peak = {"rss": 0, "held": 0}
                done = threading.Event()

                def sample():
                    while not done.wait(0.25):
                        if proc is not None:
                            peak["rss"] = max(peak["rss"], sum(bench.rss_kib(q) for q in pids))
                        peak["held"] = max(peak["held"], held_upstream(up, pids))
                t = threading.Thread(target=sample)
                t.start()
                res = bench.wrk(url, c, args.duration, timeout="10s")
                done.set()
                t.join()
                res.update(peak)
                results.setdefault(name, []).append(res)
                print("round %d, %s, c%d: %.0f req/s, p50 %.1f ms, p99 %.1f ms, %d non-2xx, %d errors, "
                      "RSS %.1f MiB, %d upstream conns" % (rnd + 1, name, c, res["rps"], res["p50"], res["p99"],
                                                           res["non2xx"], res["errors"], res["rss"] / 1024,
                                                           res["held"]), file=sys.stderr)
    finally:
        bench.stop(procs)
        netns_down()
    keys = ("rps", "p50", "p99", "non2xx", "errors", "rss", "held")
    med = {name: {k: statistics.median(r[k] for r in rs) for k in keys} for name, rs in results.items()}
    base, ref = med["direct"], med["haproxy 1t"]
    print("\nDistance: the upstream (nginx 1 worker, TLS) %d ms away each way (%s, own namespace); "
          "%d keep-alive callers, wrk -t2, %d s x %d rounds, medians"
          % (args.delay, "netem" if netem else "delay_relay", c, args.duration, args.rounds))
    print("| path | req/s | vs haproxy | p50 ms | p99 ms | added p50 ms | added p99 ms | vs haproxy | "
          "caller errors | peak RSS MiB | upstream conns held |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, m in med.items():
        added50, added99 = m["p50"] - base["p50"], m["p99"] - base["p99"]
        ref99 = ref["p99"] - base["p99"]
        print("| %s | %.0f | %.2fx | %.1f | %.1f | %s | %s | %s | %d | %s | %d |"
              % (name, m["rps"], m["rps"] / ref["rps"], m["p50"], m["p99"],
                 "-" if name == "direct" else "%.1f" % added50, "-" if name == "direct" else "%.1f" % added99,
                 "-" if name == "direct" else "%.2fx" % (added99 / ref99 if ref99 > 0 else float("nan")),
                 m["non2xx"] + m["errors"], "-" if name == "direct" else "%.1f" % (m["rss"] / 1024), m["held"]))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="shape", required=True)
    a = sub.add_parser("churn")
    a.add_argument("--connections", default="256,1000")
    a.add_argument("--duration", type=int, default=10)
    a.add_argument("--rounds", type=int, default=3)
    b = sub.add_parser("distance")
    b.add_argument("--connections", type=int, default=2000)
    b.add_argument("--duration", type=int, default=15)
    b.add_argument("--rounds", type=int, default=2)
    b.add_argument("--delay", type=int, default=25, help="ms each way")
    b.add_argument("--max-per-host", type=int, help="the gateway's upstream.max_per_host")
    for p in (a, b):
        p.add_argument("--baseline", help="another gateway binary to measure beside this one")
    args = ap.parse_args()
    for tool in ("nginx", "haproxy", "wrk", "ip", "tc", "ss"):
        if not shutil.which(tool):
            sys.exit("%s is missing: run scripts/setup.sh" % tool)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    d = tempfile.mkdtemp(prefix="gwshape-")
    try:
        (churn if args.shape == "churn" else distance)(args, d)
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
