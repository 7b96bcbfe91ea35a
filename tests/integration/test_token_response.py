"""Token answers shaped as other vendors shape them (SPEC 4 `token_response`, issue 16):
nested fields (Slack's authed_user.access_token), an absolute expires_at, expires_in in
milliseconds. Each simulator variant issues 30 s tokens in its shape; the policy that names
the shape gets the token and its lifetime right (the admin API's access_expires_at about 30 s
ahead), and the default mapping refuses a nested answer as malformed instead of guessing."""
import calendar
import json
import os
import time
import unittest
import urllib.request

from harness import CA, Gateway, Sim, Workdir, base_config, scan_for_secrets, secret

W = Workdir()
CA_ = CA(W.path)
CERT, KEY = CA_.issue("sim", "IP:127.0.0.1,DNS:localhost")
ADMIN = secret("admin-" + os.urandom(8).hex())

POLICY = """name: %(name)s
upstream: https://api.chime.me
oauth:
  token: {url: "https://chime.me/api/user-web/oauth/token", client_auth: basic}
  grants: {refresh_token: {}}
%(map)s
inject:
  header: {name: Authorization, value: "Bearer {access_token}"}
"""
SHAPES = {  # integration: (simulator shape, token_response block)
    "nested": ("nested", "  token_response:\n    access_token: authed_user.access_token\n"
                         "    refresh_token: authed_user.refresh_token\n"
                         "    expires_in: authed_user.expires_in\n"),
    "at": ("expires_at", ""),  # expires_at is read by default
    "ms": ("ms", "  token_response: {expires_in_unit: ms}\n"),
    "unmapped": ("nested", ""),
}


class TokenResponseTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        policies = os.path.join(W.path, "shape-policies")
        os.makedirs(policies, exist_ok=True)
        cfg = base_config(CA_.cert, W.path)
        cfg["policies"] = [policies]
        cfg["admin"]["token"] = ADMIN
        cfg["integrations"], cfg["connections"], cls.sims = [], [], []
        for name, (shape, block) in SHAPES.items():
            rt = secret("rt-%s-%s" % (name, os.urandom(6).hex()))
            sim = Sim("chime", CERT, KEY, "--client-id", "cid", "--seed-refresh", rt,
                      "--token-lifetime", "30")
            sim.control("/_sim/config", {"token_shape": shape})
            cls.sims.append(sim)
            with open(os.path.join(policies, name + ".yaml"), "w") as f:
                f.write(POLICY % {"name": "shape-" + name, "map": block})
            cfg["integrations"].append({
                "name": name, "policy": "shape-" + name, "client_id": "cid",
                "client_secret": sim.client_secret,
                "overrides": {"upstream": sim.url, "token_url": sim.url + "/api/user-web/oauth/token"}})
            cfg["connections"].append({"id": name, "integration": name, "grant": "refresh_token",
                                       "credentials": {"refresh_token": rt}})
        cls.gw = Gateway(W.path, cfg, name="token-response").start()

    @classmethod
    def tearDownClass(cls):
        cls.gw.stop()
        for sim in cls.sims:
            sim.stop()
        leaks = scan_for_secrets([cls.gw.log_path], extra=[ADMIN])
        assert not leaks, "secrets in the gateway's log: %r" % leaks

    def expires_in(self, connection):
        req = urllib.request.Request(
            "http://127.0.0.1:%d/admin/connections/%s" % (self.gw.admin_port, connection),
            headers={"Authorization": "Bearer " + ADMIN})
        with urllib.request.urlopen(req, timeout=5) as r:
            at = json.loads(r.read())["access_expires_at"]
        return calendar.timegm(time.strptime(at[:19], "%Y-%m-%dT%H:%M:%S")) - time.time()

    def check_shape(self, name):
        status, _, body = self.gw.request("GET", "/%s/v1/leads" % name)
        self.assertEqual(status, 200, body)
        self.assertTrue(json.loads(body)["authorized"])
        left = self.expires_in(name)
        self.assertGreater(left, 24, "%s: the 30 s lifetime was misread (%.1f s left)" % (name, left))
        self.assertLess(left, 31, "%s: the 30 s lifetime was misread (%.1f s left)" % (name, left))

    def test_nested_fields(self):
        self.check_shape("nested")

    def test_an_absolute_expiry(self):
        self.check_shape("at")

    def test_milliseconds(self):
        self.check_shape("ms")

    def test_the_default_mapping_refuses_a_nested_answer(self):
        status, _, body = self.gw.request("GET", "/unmapped/v1/leads")
        self.assertEqual(status, 503, body)
        self.assertEqual(json.loads(body)["error"], "credential_unavailable")


if __name__ == "__main__":
    unittest.main()
