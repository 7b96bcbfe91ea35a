#!/usr/bin/env python3
"""Profiles the gateway on bench.py's setup: one upstream nginx over TLS (103-byte answer),
the gateway with 1 thread injecting a static Bearer token, wrk -c64 on loopback.

  python3 benchmarks/profile.py split      # user and system CPU per request, next to haproxy
  python3 benchmarks/profile.py callgrind  # instructions per request, by library (valgrind)
  python3 benchmarks/profile.py perf       # perf record -g into OUT/perf.data
  python3 benchmarks/profile.py strace     # system calls per request (strace -c)
  python3 benchmarks/profile.py syscalls   # system calls per request at full speed, next to
                                           # haproxy (perf stat on syscall tracepoints)
  python3 benchmarks/profile.py segments   # TCP segments per request on the machine, next to
                                           # haproxy (nstat): 4 is one per transfer

Results go to --out (default /tmp/gateway-profile). Not a test: the machine's noise shows
in `split`; `callgrind` counts instructions, which do not depend on it.
"""
import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def start(d, gateway_cmd, with_haproxy):
    bench.make_certs(d)
    up = bench.port()
    procs = [bench.upstream_nginx(d, up)]
    gp = bench.port()
    path = bench.gateway_config(d, 1, gp, bench.port(), up)
    gw = subprocess.Popen(gateway_cmd + [bench.GATEWAY, "--config", path],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(gw)
    targets = [("gateway", gw, "http://127.0.0.1:%d/v/bench" % gp)]
    if with_haproxy:
        hp = bench.port()
        ha = bench.haproxy(d, 1, hp, up)
        procs.append(ha)
        bench.wait_port(hp)
        targets.insert(0, ("haproxy", ha, "http://127.0.0.1:%d/bench" % hp))
    bench.wait_port(gp, 60)
    bench.wait_port(up)
    return procs, targets


def cpu_times(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def by_library(annotated, requests):
    """Sums callgrind_annotate's per-function lines into libraries and header families."""
    groups, total = collections.Counter(), 0
    for line in annotated.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S+?):(.*)", line)
        if not m:
            continue
        n, path, fn = int(m.group(1).replace(",", "")), m.group(2), m.group(3)
        total += n
        if "libssl" in fn or "libcrypto" in fn:
            key = "OpenSSL"
        elif "malloc" in path:
            key = "malloc/free"
        elif "libc.so" in fn:
            key = "libc (memcpy, locks, ...)"
        elif "/boost/asio" in path:
            key = "Asio"
        elif "/boost/beast" in path:
            key = "Beast"
        elif "/work/" in path or "gateway/" in path:
            key = "gateway's own code"
        elif "c++/" in path:
            key = "libstdc++ (inlined)"
        else:
            key = "other"
        groups[key] += n
    print("%d instructions per request (%d requests)" % (total / requests, requests))
    for key, n in groups.most_common():
        print("  %5.1f%%  %6.1fk  %s" % (100 * n / total, n / requests / 1000, key))


SYSCALLS = ("read", "write", "recvmsg", "sendmsg", "recvfrom", "sendto", "readv", "writev",
            "epoll_wait", "epoll_ctl", "timerfd_settime", "futex", "accept4", "setsockopt",
            "ioctl")


def syscalls_per_request(name, proc, url):
    """Counts system calls with perf's tracepoints: unlike strace, it does not slow the
    process down, so the counts include the reads that find nothing yet (EAGAIN)."""
    bench.wrk(url, 64, 1)
    events = ",".join("syscalls:sys_enter_" + s for s in SYSCALLS)
    tool = subprocess.Popen(["perf", "stat", "-x", ",", "-e", events, "-p", str(proc.pid)],
                            stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    r = bench.wrk(url, 64, 5)
    tool.send_signal(2)
    err = tool.communicate()[1]
    n = max(r["requests"], 1)
    counts = []
    for line in err.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[0].strip().isdigit() and int(parts[0]) > 0:
            counts.append((parts[2].replace("syscalls:sys_enter_", ""), int(parts[0]) / n))
    total = sum(c for _, c in counts)
    print("%-8s %.2f system calls per request: %s" % (
        name, total, ", ".join("%s %.2f" % c for c in sorted(counts, key=lambda c: -c[1]))),
        flush=True)


def tcp_counters():
    out = subprocess.run(["nstat", "-az"], capture_output=True, text=True, check=True).stdout
    counters = {}
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            counters[parts[0]] = int(parts[1])
    return counters


def segments_per_request(name, url):
    """TCP segments sent on the machine per proxied request (wrk, the proxy and the upstream
    together; nothing else should be running): 4 means one per transfer and no bare ACK."""
    bench.wrk(url, 64, 1)
    before = tcp_counters()
    r = bench.wrk(url, 64, 4)
    after = tcp_counters()
    n = max(r["requests"], 1)
    print("%-8s " % name + ", ".join(
        "%s %.3f" % (k, (after.get(k, 0) - before.get(k, 0)) / n)
        for k in ("TcpOutSegs", "TcpExtTCPPureAcks", "TcpExtDelayedACKs")) + " per request",
        flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode",
                    choices=("split", "callgrind", "perf", "strace", "syscalls", "segments"))
    ap.add_argument("--out", default="/tmp/gateway-profile")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    d = tempfile.mkdtemp(prefix="gwprof-")
    prefix = []
    if args.mode == "callgrind":
        prefix = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                  "--callgrind-out-file=%s/callgrind.out" % args.out]
    procs, targets = start(d, prefix, args.mode in ("split", "syscalls", "segments"))
    try:
        if args.mode == "segments":
            for name, _, url in targets:
                segments_per_request(name, url)
            return
        if args.mode == "syscalls":
            for name, proc, url in targets:
                syscalls_per_request(name, proc, url)
            return
        if args.mode == "split":
            for _ in range(args.rounds):
                for name, proc, url in targets:
                    bench.wrk(url, 64, 1)
                    u0, s0 = cpu_times(proc.pid)
                    r = bench.wrk(url, 64, 5)
                    u1, s1 = cpu_times(proc.pid)
                    n = max(r["requests"], 1)
                    print("%-8s %6.0f req/s  user %5.1f us  sys %5.1f us  total %5.1f us  p99 %.2f ms"
                          % (name, r["rps"], (u1 - u0) / n * 1e6, (s1 - s0) / n * 1e6,
                             (u1 - u0 + s1 - s0) / n * 1e6, r["p99"]), flush=True)
            return
        name, gw, url = targets[-1]
        if args.mode == "callgrind":
            bench.wrk(url, 8, 3)  # start-up and warm-up are not counted
            subprocess.run(["callgrind_control", "-i", "on", str(gw.pid)],
                           stdout=subprocess.DEVNULL, check=True)
            r = bench.wrk(url, 8, 10)
            gw.terminate()
            gw.wait()
            out = subprocess.run(["callgrind_annotate", "--threshold=100",
                                  "%s/callgrind.out" % args.out],
                                 capture_output=True, text=True).stdout
            by_library(out, r["requests"])
            return
        bench.wrk(url, 64, 1)
        if args.mode == "perf":
            tool = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-o",
                                     "%s/perf.data" % args.out, "-p", str(gw.pid)],
                                    stderr=subprocess.DEVNULL)
        else:
            tool = subprocess.Popen(["strace", "-c", "-f", "-o", "%s/strace.txt" % args.out,
                                     "-p", str(gw.pid)])
        time.sleep(0.5)
        r = bench.wrk(url, 64, 5)
        tool.send_signal(2)
        tool.wait()
        print("%d requests; results in %s" % (r["requests"], args.out))
        if args.mode == "strace":
            print(open("%s/strace.txt" % args.out).read())
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()


if __name__ == "__main__":
    main()
