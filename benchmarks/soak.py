#!/usr/bin/env python3
"""Soak: mixed traffic to all four vendor simulators through one gateway for a while (default
10 minutes), with 3 s access tokens (rotating single-use refresh tokens where the vendor
rotates), random upstream faults and a config reload (SIGHUP) every minute. One request in
five is a HEAD or a GET answered 204, and one fault kind makes the vendor write a body and a
whole fake answer after those (issue 13.1): every caller's answer must be its own (the
simulator echoes the X-Request-Id it got; a crossed answer carries another id).

  python3 benchmarks/soak.py [--minutes 10] [--clients 8]

Passes when no answer crossed to another caller, the gateway never dies, its RSS after warm-up stays flat (within 20 % and 8 MiB),
and every answer other than 200 falls inside a fault window injected on that vendor (plus
a few seconds for the fault to clear). Prints a summary; exit status 1 otherwise. Runs the
real binary (GATEWAY_BIN, default build/gateway) on 127.0.0.1 only.
"""
import argparse
import base64
import collections
import json
import os
import random
import signal
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
os.environ.setdefault("GATEWAY_BIN", os.path.join(HERE, "..", "build", "gateway"))

from harness import CA, Gateway, Sim, Workdir, base_config, rss_kb, scan_for_secrets, secret  # noqa: E402

VENDORS = {
    # vendor: (policy, token path, connection, sim args, request path)
    "chime": ("chime", "/api/user-web/oauth/token", "refresh_token", ["--rotate-refresh"], "/v1/leads"),
    "zendesk": ("zendesk-chat", "/oauth2/chat/token", "refresh_token", ["--rotate-refresh"], "/api/v2/chats"),
    "chip": ("chip", "/oauth/token", "refresh_token", [], "/api/me/"),
    "comm100": ("comm100", "/oauth/token", "refresh_token", [], "/api/v2/livechat/agents"),
}
FAULTS = ("slow_api", "token_endpoint_503", "stray_bytes")
SLACK = 8.0  # seconds after a fault window in which its effects may still show


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    duration = args.minutes * 60
    w = Workdir()
    ca = CA(w.path)
    cert, key = ca.issue("sim", "IP:127.0.0.1,DNS:localhost")
    sims, integrations, connections = {}, [], []
    for vendor, (policy, token_path, grant, extra, _) in VENDORS.items():
        rt = secret("rt-seed-" + os.urandom(8).hex())
        sims[vendor] = Sim(vendor, cert, key, "--client-id", "cid", "--seed-refresh", rt,
                           "--token-lifetime", "3", *extra)
        urls = {"upstream": sims[vendor].url, "token_url": sims[vendor].url + token_path}
        if vendor == "chip":
            urls["refresh_url"] = sims[vendor].url + "/oauth/refresh"
        integ = {"name": vendor, "policy": policy, "client_id": "cid",
                 "client_secret": sims[vendor].client_secret, "overrides": urls}
        if vendor == "comm100":
            integ["vars"] = {"site_id": "10000"}
        if vendor == "zendesk":
            integ["vars"] = {"subdomain": "acme"}
        integrations.append(integ)
        connections.append({"id": vendor + "-main", "integration": vendor, "grant": grant,
                            "credentials": {"refresh_token": rt}})
    cfg = base_config(ca.cert, w.path)
    cfg["log"] = {"level": "info", "access_log": False}
    cfg["store"] = {"kind": "file", "path": os.path.join(w.path, "tokens.db"),
                    "key": base64.b64encode(os.urandom(32)).decode()}
    cfg["refresh"] = {"skew": "1s", "timeout": "3s", "backoff": {"initial": "200ms", "max": "2s"}}
    cfg["upstream"]["response_timeout"] = "2s"
    cfg["integrations"] = integrations
    cfg["connections"] = connections
    gw = Gateway(w.path, cfg, name="soak").start()

    results = []  # (time, vendor, status, error code)
    lock = threading.Lock()
    faults = []  # (start, end, vendor, kind)
    stop = threading.Event()
    start = time.time()

    crossed = []  # (vendor, method, path, sent id, what came back)

    def client(seed):
        rnd = random.Random(seed)
        conn = gw.conn(timeout=20)
        n = 0
        while not stop.is_set():
            vendor = rnd.choice(list(VENDORS))
            path = "/" + vendor + VENDORS[vendor][4]
            method, expected = "GET", 200
            kind = rnd.random()
            if kind < 0.1:
                method = "HEAD"
            elif kind < 0.2:
                path, expected = path.rstrip("/") + "/no-content", 204
            n += 1
            rid = "soak-%d-%d" % (seed, n)
            t = time.time()
            try:
                conn.request(method, path, headers={"X-Request-Id": rid})
                r = conn.getresponse()
                body = r.read()
                status, code = r.status, r.getheader("X-Gateway-Error", "")
                if status == expected:
                    status = 200  # as expected: counted as a success below
                    own = (body == b"" if method == "HEAD" or expected == 204
                           else json.loads(body).get("request_id") == rid)
                    if not own:
                        with lock:
                            crossed.append((vendor, method, path, rid, body[:120]))
                elif b"stolen" in body:
                    with lock:
                        crossed.append((vendor, method, path, rid, body[:120]))
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = gw.conn(timeout=20)
            except OSError as e:
                status, code = 0, type(e).__name__
                conn.close()
                conn = gw.conn(timeout=20)
            with lock:
                results.append((t, vendor, status, code))

    def injector():
        rnd = random.Random(7)
        while not stop.wait(rnd.uniform(5, 15)):
            vendor, kind = rnd.choice(list(VENDORS)), rnd.choice(FAULTS)
            t0 = time.time()
            if kind == "slow_api":
                sims[vendor].control("/_sim/config", {"delay_ms": 2500})
            elif kind == "stray_bytes":
                sims[vendor].control("/_sim/config", {"stray": True})
            else:
                sims[vendor].control("/_sim/config", {"fail_token": {"count": 3, "status": 503}})
            stop.wait(5 if kind == "stray_bytes" else 2)
            sims[vendor].control("/_sim/config", {"delay_ms": 0, "fail_token": None, "stray": False})
            with lock:
                faults.append((t0, time.time(), vendor, kind))

    rss = []  # (seconds since start, KiB)
    reloads = 0
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
    threads.append(threading.Thread(target=injector, daemon=True))
    for t in threads:
        t.start()
    next_reload = start + 60
    crashed = False
    while time.time() - start < duration:
        time.sleep(5)
        if gw.proc.poll() is not None:
            crashed = True
            break
        rss.append((time.time() - start, rss_kb(gw.proc.pid)))
        if time.time() >= next_reload:
            gw.signal(signal.SIGHUP)
            reloads += 1
            next_reload += 60
        with lock:
            n = len(results)
        print("%4.0f s: %d requests, RSS %.1f MiB" % (time.time() - start, n, rss[-1][1] / 1024),
              file=sys.stderr)
    stop.set()
    for t in threads:
        t.join(30)
    alive = gw.proc.poll() is None
    gw.stop()
    for s in sims.values():
        s.stop()

    def explained(t, vendor):
        return any(v == vendor and f0 - 0.5 <= t <= f1 + SLACK for f0, f1, v, _ in faults)

    errors = [r for r in results if r[2] != 200]
    unexplained = [r for r in errors if not explained(r[0], r[1])]
    by_kind = collections.Counter("%s %s %s" % (r[1], r[2], r[3]) for r in errors)
    warm = [kb for s, kb in rss if s >= 60] or [kb for _, kb in rss]
    growth = (warm[-1] - warm[0]) if warm else 0
    leaks = scan_for_secrets([gw.log_path])
    ok = (not crashed and alive and not unexplained and not leaks and not crossed and
          growth <= max(0.2 * warm[0], 8 * 1024))
    print("\nSoak: %.1f min, %d clients, 4 vendors, 3 s tokens, %d faults injected, %d reloads"
          % (duration / 60, args.clients, len(faults), reloads))
    stray_windows = sum(1 for f in faults if f[3] == "stray_bytes")
    print("Crossed answers: %d (HEAD and 204 requests, %d windows of a vendor writing past them)"
          % (len(crossed), stray_windows))
    print("| requests | req/s | non-200 | unexplained | RSS after warm-up (first, last, max) | crashed | secrets in log |")
    print("|---|---|---|---|---|---|---|")
    print("| %d | %.0f | %d | %d | %.1f, %.1f, %.1f MiB | %s | %d |"
          % (len(results), len(results) / duration, len(errors), len(unexplained),
             warm[0] / 1024 if warm else 0, warm[-1] / 1024 if warm else 0,
             max(warm) / 1024 if warm else 0, "yes" if crashed or not alive else "no", len(leaks)))
    for kind, n in by_kind.most_common():
        print("  %-40s %d" % (kind, n))
    for c in crossed[:10]:
        print("  crossed: %s %s %s sent %s got %r" % c)
    for r in unexplained[:10]:
        print("  unexplained: t=%.1f %s %d %s" % (r[0] - start, r[1], r[2], r[3]))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
