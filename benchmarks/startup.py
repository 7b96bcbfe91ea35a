#!/usr/bin/env python3
"""Start-up time with a file store of many connections (issue 6: ready within 100 ms with
1,000 connections).

  python3 benchmarks/startup.py [--connections 1000] [--rounds 5]

Fills a file store through the admin API (PUT /admin/connections/{id}, client_credentials
against the Zendesk Chat simulator, so every record holds an encrypted token), stops the
gateway, then starts it again `rounds` times and measures, from the moment the process is
spawned: the "gateway started" log line (listeners open, store loaded), the first 200 from
/readyz, and the first 200 proxied through the last stored connection. Prints the medians;
everything on 127.0.0.1. Runs GATEWAY_BIN (default build/gateway).
"""
import argparse
import base64
import concurrent.futures
import http.client
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
os.environ.setdefault("GATEWAY_BIN", os.path.join(HERE, "..", "build", "gateway"))

from harness import CA, Gateway, Sim, Workdir, base_config, secret  # noqa: E402


def call(port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path, body=json.dumps(body) if body is not None else None,
                  headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def until_200(port, path, headers=None, deadline=10.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if call(port, "GET", path, headers=headers)[0] == 200:
                return time.monotonic()
        except OSError:
            pass
        time.sleep(0.001)
    raise RuntimeError("no 200 from %s within %.0f s" % (path, deadline))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    w = Workdir()
    ca = CA(w.path)
    cert, key = ca.issue("sim", "IP:127.0.0.1,DNS:localhost")
    sim = Sim("zendesk", cert, key, "--client-id", "cid", "--token-lifetime", "3600")
    admin_token = secret("adm-" + os.urandom(8).hex())
    cfg = base_config(ca.cert, w.path)
    cfg["log"] = {"level": "info", "access_log": False}
    cfg["admin"]["token"] = admin_token
    cfg["store"] = {"kind": "file", "path": os.path.join(w.path, "tokens.db"),
                    "key": base64.b64encode(os.urandom(32)).decode()}
    cfg["integrations"] = [{
        "name": "chat", "policy": "zendesk-chat", "client_id": "cid",
        "client_secret": sim.client_secret, "vars": {"subdomain": "acme"},
        "overrides": {"upstream": sim.url, "token_url": sim.url + "/oauth2/chat/token"}}]
    auth = {"Authorization": "Bearer " + admin_token, "Content-Type": "application/json"}
    ids = ["acct-%04d" % i for i in range(args.connections)]

    gw = Gateway(w.path, cfg, name="fill").start()
    t = time.monotonic()
    body = {"integration": "chat", "grant": "client_credentials"}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(
            lambda i: call(gw.admin_port, "PUT", "/admin/connections/" + i, body, auth)[0], ids))
    gw.stop()
    bad = [s for s in statuses if s not in (200, 201)]
    if bad:
        raise SystemExit("filling the store failed: %r" % bad[:5])
    store_bytes = os.path.getsize(cfg["store"]["path"])
    print("store: %d connections, %d bytes, filled in %.1f s" % (
        len(ids), store_bytes, time.monotonic() - t))

    started, ready, served = [], [], []
    for r in range(args.rounds):
        gw = Gateway(w.path, cfg, name="start%d" % r)
        t0 = time.monotonic()
        gw.start()
        started.append((time.monotonic() - t0) * 1000)
        ready.append((until_200(gw.admin_port, "/readyz") - t0) * 1000)
        served.append((until_200(gw.port, "/chat/api/v2/chats",
                                 {"X-Gateway-Connection": ids[-1]}) - t0) * 1000)
        listed = json.loads(call(gw.admin_port, "GET", "/admin/connections", headers=auth)[1])
        gw.stop()
        if len(listed) != len(ids):
            raise SystemExit("round %d: %d connections restored, expected %d"
                             % (r, len(listed), len(ids)))
    sim.stop()
    print("start-up with %d stored connections, median of %d rounds (min-max):" % (
        len(ids), args.rounds))
    for name, xs in (("'gateway started' logged", started), ("/readyz 200", ready),
                     ("first proxied 200", served)):
        print("  %-26s %6.1f ms  (%.1f-%.1f)" % (name, statistics.median(xs), min(xs), max(xs)))


if __name__ == "__main__":
    main()
