"""PKCE (RFC 7636, SPEC 4 `authorize.pkce`, issue 16): onboarding against a vendor that
requires it. The simulator (--require-pkce) refuses an authorize request without an S256
code_challenge, as strict OAuth 2.1 servers do, and checks the verifier at the code exchange.
The browser is played by the test: it follows the redirects and presses Allow."""
import html.parser
import json
import os
import re
import shutil
import ssl
import unittest
import urllib.parse
import urllib.request

from harness import CA, Gateway, Sim, Workdir, base_config, free_port, scan_for_secrets, secret

W = Workdir()
CA_ = CA(W.path)
CERT, KEY = CA_.issue("sim", "IP:127.0.0.1,DNS:localhost")
ADMIN = secret("admin-" + os.urandom(8).hex())
SOURCE = os.environ.get("GATEWAY_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Form(html.parser.HTMLParser):
    """The consent page's hidden fields."""

    def __init__(self):
        super().__init__()
        self.fields = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "input" and a.get("type") == "hidden":
            self.fields[a["name"]] = a.get("value", "")


class PkceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.admin_port = free_port()
        public = "http://localhost:%d" % cls.admin_port
        cls.sim = Sim("zendesk", CERT, KEY, "--client-id", "cid", "--require-pkce",
                      "--redirect-uri", public + "/oauth/callback")
        # The shipped policies, and one copy of Zendesk's with PKCE switched off.
        policies = os.path.join(W.path, "pkce-policies")
        os.makedirs(policies, exist_ok=True)
        with open(os.path.join(SOURCE, "policies", "zendesk-chat.yaml")) as f:
            text = f.read()
        text = text.replace("name: zendesk-chat", "name: zendesk-chat-nopkce", 1)
        text = text.replace("  authorize:\n", "  authorize:\n    pkce: none\n", 1)
        with open(os.path.join(policies, "zendesk-chat-nopkce.yaml"), "w") as f:
            f.write(text)
        cfg = base_config(CA_.cert, W.path)
        cfg["policies"] = [os.path.join(SOURCE, "policies"), policies]
        cfg["admin"] = {"address": "127.0.0.1", "port": cls.admin_port, "token": ADMIN,
                        "public_url": public}
        overrides = {"upstream": cls.sim.url, "token_url": cls.sim.url + "/oauth2/chat/token",
                     "authorize_url": cls.sim.url + "/oauth2/chat/authorizations/new"}
        cfg["integrations"] = [
            {"name": "zendesk", "policy": "zendesk-chat", "client_id": "cid",
             "client_secret": cls.sim.client_secret, "overrides": overrides},
            {"name": "nopkce", "policy": "zendesk-chat-nopkce", "client_id": "cid",
             "client_secret": cls.sim.client_secret, "overrides": overrides}]
        cls.gw = Gateway(W.path, cfg, name="pkce").start()
        cls.tls = ssl.create_default_context(cafile=CA_.cert)
        cls.tls.check_hostname = False

    @classmethod
    def tearDownClass(cls):
        cls.gw.stop()
        cls.sim.stop()
        leaks = scan_for_secrets([cls.gw.log_path], extra=[ADMIN])
        assert not leaks, "secrets in the gateway's log: %r" % leaks

    def onboard(self, integration, connection):
        """Start, consent (Allow), callback: (the vendor's authorize URL, the callback page)."""
        req = urllib.request.Request(
            "http://127.0.0.1:%d/admin/connections/%s/authorize" % (self.admin_port, connection),
            data=json.dumps({"integration": integration, "vars": {"subdomain": "acme"}}).encode(),
            headers={"Authorization": "Bearer " + ADMIN}, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            start = json.loads(r.read())["start_url"]
        opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=self.tls))

        def location(url):
            try:
                opener.open(url, timeout=10)
            except urllib.error.HTTPError as e:
                self.assertIn(e.code, (302, 303), url)
                return e.headers["Location"]
            self.fail("no redirect from " + url)

        authorize = location(start)
        try:
            body = opener.open(authorize, timeout=10).read().decode()
        except urllib.error.HTTPError as e:
            # The vendor refused at once and sent the browser back to our callback.
            self.assertIn(e.code, (302, 303), authorize)
            step, body = e.headers["Location"], ""
        if "/_consent" in body:  # the consent page: press Allow
            form = Form()
            form.feed(body)
            step = location(self.sim.url + "/_consent?" +
                            urllib.parse.urlencode(dict(form.fields, decision="allow")))
        if step.startswith(self.sim.url):
            self.fail("stuck at the vendor: " + step)
        callback = step.replace("http://localhost:", "http://127.0.0.1:", 1)
        try:
            with urllib.request.urlopen(callback, timeout=20) as r:
                return authorize, r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return authorize, e.code, e.read().decode()

    def test_onboarding_sends_an_s256_challenge_and_its_verifier(self):
        before = self.sim.state()["pkce_verified"]
        authorize, status, page = self.onboard("zendesk", "with-pkce")
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(authorize).query)
        self.assertEqual(query["code_challenge_method"], ["S256"])
        self.assertRegex(query["code_challenge"][0], r"^[A-Za-z0-9_-]{43}$")
        self.assertEqual(status, 200, page)
        self.assertIn("is now connected", page)
        self.assertEqual(self.sim.state()["pkce_verified"], before + 1)
        status, _, _ = self.gw.request("GET", "/zendesk/api/v2/chat/chats",
                                       headers={"X-Gateway-Connection": "with-pkce"})
        self.assertEqual(status, 200)
        # The verifier never shows in the log.
        with open(self.gw.log_path) as f:
            self.assertNotIn("code_verifier", f.read())

    def test_a_strict_server_refuses_onboarding_without_pkce_and_the_page_says_why(self):
        authorize, status, page = self.onboard("nopkce", "without-pkce")
        self.assertNotIn("code_challenge", authorize)
        self.assertEqual(status, 400)
        self.assertIn("Authorization refused", page)
        self.assertIn("invalid_request: requires PKCE (S256)", page)
        lines = self.gw.wait_lines(lambda l: l.get("msg") == "onboarding refused by the vendor")
        self.assertEqual(lines[0]["connection"], "without-pkce")


if __name__ == "__main__":
    unittest.main()
