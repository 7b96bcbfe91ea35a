"""The admin API and OAuth onboarding (SPEC section 7) through the real binary: Bearer
checks, connections created, refreshed, re-authorized and deleted at run time, and the
authorization code flow in a real headless Chromium for Chime (cookie), Chip (state) and
Zendesk Chat (subdomain from the ticket)."""
import base64
import json
import os
import shutil
import socket
import subprocess
import time
import unittest
import urllib.error
import urllib.request

from harness import CA, Gateway, Sim, Workdir, base_config, scan_for_secrets, secret

W = Workdir()
CA_ = CA(W.path)
CERT, KEY = CA_.issue("sim", "IP:127.0.0.1,DNS:localhost")
ADMIN = secret("adm-" + os.urandom(8).hex())

TOKEN_PATHS = {"chime": "/api/user-web/oauth/token", "zendesk-chat": "/oauth2/chat/token",
               "chip": "/oauth/token"}
AUTHORIZE_PATHS = {"chime": "/page/vendor-auth.html", "zendesk-chat": "/oauth2/chat/authorizations/new",
                   "chip": "/oauth"}
VENDOR = {"chime": "chime", "zendesk-chat": "zendesk", "chip": "chip"}


class Admin:
    def __init__(self, gw, token=ADMIN):
        self.base = "http://127.0.0.1:%d" % gw.admin_port
        self.token = token

    def call(self, method, path, body=None, token=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        tok = self.token if token is None else token
        if tok:
            req.add_header("Authorization", "Bearer " + tok)
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode()


class Browser:
    """Debian's chromium driven through chromedriver's W3C WebDriver HTTP API."""

    def __init__(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.proc = subprocess.Popen(["chromedriver", "--port=%d" % self.port],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = "http://127.0.0.1:%d" % self.port
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                self.call("GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        self.profile = os.path.join(W.path, "chrome-%s" % os.urandom(4).hex())
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--ignore-certificate-errors", "--user-data-dir=" + self.profile]}}}}
        self.session = self.call("POST", "/session", caps)["value"]["sessionId"]
        # A click returns before the next page loads: element look-ups wait for it.
        self.s("POST", "/timeouts", {"implicit": 10000})

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def s(self, method, path, body=None):
        return self.call(method, "/session/%s%s" % (self.session, path), body)["value"]

    def open(self, url):
        self.s("POST", "/url", {"url": url})

    def click(self, css):
        el = self.s("POST", "/element", {"using": "css selector", "value": css})
        self.s("POST", "/element/%s/click" % list(el.values())[0], {})

    def text(self, css):
        el = self.s("POST", "/element", {"using": "css selector", "value": css})
        return self.s("GET", "/element/%s/text" % list(el.values())[0])

    def url(self):
        return self.s("GET", "/url")

    def title_after(self, old, timeout=10):
        """The page's #title once it is no longer `old`: a click returns before the next page
        has loaded, and both pages have a #title."""
        deadline = time.time() + timeout
        while True:
            try:
                title = self.text("#title")
            except urllib.error.HTTPError:  # the element went away with the old page
                title = old
            if title != old or time.time() > deadline:
                return title
            time.sleep(0.05)

    def close(self):
        try:
            self.call("DELETE", "/session/" + self.session)
        finally:
            self.proc.terminate()
            self.proc.wait(10)
            shutil.rmtree(self.profile, ignore_errors=True)


class Env:
    def __init__(self, policy, connections=(), sim_args=(), store=None, name=None):
        vendor = VENDOR[policy]
        self.sim = Sim(vendor, CERT, KEY, "--client-id", "cid", *sim_args)
        cfg = base_config(CA_.cert, W.path)
        cfg["admin"] = {"address": "127.0.0.1", "port": 0, "token": ADMIN,
                        "public_url": "http://localhost:0"}
        if store:
            cfg["store"] = store
        urls = {"upstream": self.sim.url, "token_url": self.sim.url + TOKEN_PATHS[policy],
                "authorize_url": self.sim.url + AUTHORIZE_PATHS[policy]}
        if policy == "chip":
            urls["refresh_url"] = self.sim.url + "/oauth/refresh"
        cfg["integrations"] = [{"name": "api", "policy": policy, "client_id": "cid",
                                "client_secret": self.sim.client_secret, "overrides": urls}]
        cfg["connections"] = list(connections)
        self.gw = Gateway(W.path, cfg, name=name or "admin-" + policy).start()
        # The public URL names the admin port, known only now: reload with it.
        cfg["admin"]["public_url"] = "http://localhost:%d" % self.gw.admin_port
        cfg["admin"]["port"] = self.gw.admin_port
        self.gw.stop()
        self.gw.config = cfg
        self.gw.write_config(cfg)
        self.gw.lines.clear()
        self.gw.start()
        self.sim.control("/_sim/config", {"redirect_uri": cfg["admin"]["public_url"] + "/oauth/callback"})
        self.admin = Admin(self.gw)

    def close(self):
        self.gw.stop()
        self.sim.stop()
        leaks = scan_for_secrets([self.gw.log_path])
        assert not leaks, "secrets in the gateway's log: %r" % leaks


class AdminApiTest(unittest.TestCase):
    def test_bearer_required_and_disabled_without_token(self):
        env = Env("zendesk-chat")
        try:
            self.assertEqual(env.admin.call("GET", "/admin/connections", token="")[0], 401)
            self.assertEqual(env.admin.call("GET", "/admin/connections", token="wrong")[0], 401)
            self.assertEqual(env.admin.call("GET", "/admin/connections")[0], 200)
            self.assertEqual(env.admin.call("GET", "/healthz", token="")[1], {"status": "ok"})
            self.assertEqual(env.admin.call("GET", "/readyz", token="")[0], 200)
        finally:
            env.close()
        cfg = base_config(CA_.cert, W.path)
        gw = Gateway(W.path, cfg, name="notoken").start()
        try:
            self.assertEqual(Admin(gw).call("GET", "/admin/connections")[0], 403)
        finally:
            gw.stop()

    def test_connection_lifecycle_through_the_api(self):
        env = Env("zendesk-chat")
        try:
            body = {"integration": "api", "vars": {"subdomain": "acme"}, "grant": "client_credentials"}
            status, conn = env.admin.call("PUT", "/admin/connections/acme", body)
            self.assertEqual(status, 201, conn)
            self.assertEqual(conn["state"], "ready")
            self.assertIsNotNone(conn["access_expires_at"])
            self.assertEqual(env.sim.state()["token_requests"], 1)
            self.assertEqual(env.gw.request("GET", "/api/api/v2/chat/chats")[0], 200)
            self.assertNotIn("access_token", json.dumps(conn))
            status, listed = env.admin.call("GET", "/admin/connections")
            self.assertEqual([c["id"] for c in listed], ["acme"])
            self.assertEqual(env.admin.call("PUT", "/admin/connections/acme", body)[0], 200)
            # A forced refresh, then one the vendor refuses.
            status, out = env.admin.call("POST", "/admin/connections/acme/refresh")
            self.assertEqual(status, 200, out)
            self.assertIn("access_expires_at", out)
            env.sim.control("/_sim/config", {"fail_token": {"count": 1, "status": 400,
                                                            "body": {"error": "invalid_client"}}})
            status, out = env.admin.call("POST", "/admin/connections/acme/refresh")
            self.assertEqual(status, 502)
            self.assertEqual(out["error"], "invalid_client")
            self.assertEqual(env.admin.call("GET", "/admin/connections/acme")[1]["state"], "needs_reauth")
            self.assertEqual(env.gw.request("GET", "/api/api/v2/chat/chats")[0], 503)
            # Re-authorizing through the admin API makes it ready again.
            status, conn = env.admin.call("PUT", "/admin/connections/acme", body)
            self.assertEqual(conn["state"], "ready", conn)
            self.assertEqual(env.gw.request("GET", "/api/api/v2/chat/chats")[0], 200)
            # Bad input is refused with a reason and changes nothing.
            for bad in ({"integration": "nope"}, {"integration": "api", "vars": {"subdomain": "evil.com/x#"}},
                        {"integration": "api", "grant": "refresh_token"}, "not json"):
                status, out = env.admin.call("PUT", "/admin/connections/acme2", bad)
                self.assertEqual(status, 400, out)
                self.assertTrue(out["message"])
            self.assertEqual(env.admin.call("GET", "/admin/connections/acme2")[0], 404)
            self.assertEqual(env.admin.call("DELETE", "/admin/connections/acme")[0], 204)
            status, _, _ = env.gw.request("GET", "/api/x", headers={"X-Gateway-Connection": "acme"})
            self.assertEqual(status, 404)
        finally:
            env.close()

    def test_runtime_connections_survive_restart(self):
        key = base64.b64encode(os.urandom(32)).decode()
        store = {"kind": "file", "path": os.path.join(W.path, "admin-store.db"), "key": key}
        env = Env("zendesk-chat", store=store, name="admin-restart")
        try:
            body = {"integration": "api", "vars": {"subdomain": "acme"}, "grant": "client_credentials"}
            self.assertEqual(env.admin.call("PUT", "/admin/connections/acme", body)[0], 201)
            env.gw.stop()
            env.gw.start()
            admin = Admin(env.gw)
            status, conn = admin.call("GET", "/admin/connections/acme")
            self.assertEqual(status, 200)
            self.assertEqual(conn["vars"]["subdomain"], "acme")
            self.assertEqual(env.gw.request("GET", "/api/api/v2/chat/chats")[0], 200)
            self.assertEqual(env.sim.state()["token_requests"], 1)  # no new token needed
        finally:
            env.close()


@unittest.skipUnless(shutil.which("chromedriver") and os.path.exists("/usr/bin/chromium"),
                     "chromium and chromium-driver are installed by scripts/setup.sh")
class OnboardingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.browser = Browser()

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()

    def onboard(self, policy, vars=None, tamper=False):
        env = Env(policy, name="onboard-" + policy)
        try:
            status, out = env.admin.call("POST", "/admin/connections/acct/authorize",
                                         {"integration": "api", "vars": vars or {}})
            self.assertEqual(status, 200, out)
            self.assertEqual(out["expires_in"], 600)
            self.browser.open(out["start_url"])
            self.assertIn(VENDOR[policy], self.browser.text("h1"))
            if tamper:
                # The vendor sends back a state the gateway never issued.
                url = self.browser.url()
                self.browser.open(url.replace("state=", "state=tampered"))
            self.browser.click("#allow")
            if policy == "chime":
                # State-less vendor: the person confirms on the gateway's own page.
                self.assertEqual(self.browser.text("#title"), "Confirm the connection")
                self.assertIn("acct", self.browser.text("#message"))
                self.browser.click("#confirm")
                title = self.browser.title_after("Confirm the connection")
            else:
                title = self.browser.text("#title")
            message = self.browser.text("#message")
            records = env.sim.requests()
            return env, title, message
        except Exception:
            env.close()
            raise

    def test_chime_cookie_binding(self):
        env, title, message = self.onboard("chime")
        try:
            self.assertEqual(title, "Connected", message)
            self.assertIn("acct", message)
            status, _, _ = env.gw.request("GET", "/api/v1/leads")
            self.assertEqual(status, 200)
            rec = env.sim.requests()[-1]
            auth = [v for k, v in rec["headers"] if k == "Authorization"][0]
            self.assertTrue(auth.startswith("Bearer at-"))
            self.assertEqual(env.admin.call("GET", "/admin/connections/acct")[1]["state"], "ready")
        finally:
            env.close()

    def test_chime_forced_callback_needs_confirmation(self):
        # Issue 13.13: a state-less vendor's callback can be forced on the person's browser
        # with an attacker's code (login CSRF). It connects nothing until confirmed on our
        # page, and a form posted from elsewhere, without that page's token, is refused.
        env = Env("chime", name="onboard-forced")
        try:
            status, out = env.admin.call("POST", "/admin/connections/acct/authorize",
                                         {"integration": "api"})
            self.assertEqual(status, 200, out)
            self.browser.open(out["start_url"])  # binds this browser (the cookie)
            callback = "http://localhost:%d/oauth/callback?code=attackers-code" % env.gw.admin_port
            self.browser.open(callback)
            self.assertEqual(self.browser.text("#title"), "Confirm the connection")
            self.assertEqual(env.sim.state()["token_requests"], 0)
            self.assertEqual(env.admin.call("GET", "/admin/connections/acct")[0], 404)
            # A forged confirmation (no token) changes nothing.
            self.browser.s("POST", "/execute/sync", {"script": (
                "var f=document.createElement('form');f.method='post';f.action='/oauth/callback';"
                "var i=document.createElement('input');i.name='confirm';i.value='guess';"
                "f.appendChild(i);document.body.appendChild(f);f.submit();"), "args": []})
            self.assertEqual(self.browser.title_after("Confirm the connection"),
                             "Authorization failed")
            self.assertEqual(env.sim.state()["token_requests"], 0)
            self.assertEqual(env.admin.call("GET", "/admin/connections/acct")[0], 404)
        finally:
            env.close()

    def test_chip_state_checked(self):
        env, title, message = self.onboard("chip")
        try:
            self.assertEqual(title, "Connected", message)
            self.assertEqual(env.gw.request("GET", "/api/me/")[0], 200)
        finally:
            env.close()
        env, title, message = self.onboard("chip", tamper=True)
        try:
            self.assertEqual(title, "Authorization failed")
            self.assertEqual(env.admin.call("GET", "/admin/connections/acct")[0], 404)
            self.assertEqual(env.sim.state()["token_requests"], 0)
        finally:
            env.close()

    def test_zendesk_subdomain_from_ticket(self):
        env, title, message = self.onboard("zendesk-chat", vars={"subdomain": "acme"})
        try:
            self.assertEqual(title, "Connected", message)
            status, conn = env.admin.call("GET", "/admin/connections/acct")
            self.assertEqual(conn["vars"]["subdomain"], "acme")
            self.assertEqual(env.gw.request("GET", "/api/api/v2/chat/chats")[0], 200)
        finally:
            env.close()


if __name__ == "__main__":
    unittest.main()
