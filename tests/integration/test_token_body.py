"""Token requests as JSON-only vendors want them (SPEC 4 `token.body: json`, `token.headers`;
issue 16): a simulator whose token endpoint takes only a JSON object and insists on an extra
header (Notion, Figma, Auth0 style). A policy saying `body: json` with that header gets
tokens; the same vendor refuses the form body, and a missing header, and the caller then gets
the gateway's 503 credential_unavailable, never a token the vendor did not issue."""
import json
import os
import unittest

from harness import CA, Gateway, Sim, Workdir, base_config, scan_for_secrets, secret

W = Workdir()
CA_ = CA(W.path)
CERT, KEY = CA_.issue("sim", "IP:127.0.0.1,DNS:localhost")
SOURCE = os.environ.get("GATEWAY_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
API_KEY = secret("ak-" + os.urandom(8).hex())

POLICY = """name: %(name)s
upstream: https://api.chime.me
oauth:
  token:
    url: https://chime.me/api/user-web/oauth/token
    method: POST
    client_auth: basic
    %(body)s
    %(headers)s
  grants:
    refresh_token: {}
inject:
  header: {name: Authorization, value: "Bearer {access_token}"}
"""


class TokenBodyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.seeds = {name: secret("rt-%s-%s" % (name, os.urandom(6).hex()))
                     for name in ("json", "form", "noheader")}
        extra = []
        for rt in cls.seeds.values():
            extra += ["--seed-refresh", rt]
        cls.sim = Sim("chime", CERT, KEY, "--client-id", "cid", "--json-token",
                      "--token-header", "X-Api-Key:" + API_KEY, *extra)
        policies = os.path.join(W.path, "json-policies")
        os.makedirs(policies, exist_ok=True)
        for name, body, headers in (
                ("chime-json", "body: json", "headers: {X-Api-Key: \"{api_key}\"}"),
                ("chime-form", "body: form", "headers: {X-Api-Key: \"{api_key}\"}"),
                ("chime-noheader", "body: json", "")):
            with open(os.path.join(policies, name + ".yaml"), "w") as f:
                f.write(POLICY % {"name": name, "body": body, "headers": headers})
        cfg = base_config(CA_.cert, W.path)
        cfg["policies"] = [policies]
        cfg["integrations"] = []
        cfg["connections"] = []
        for name in ("json", "form", "noheader"):
            cfg["integrations"].append({
                "name": name, "policy": "chime-" + name, "client_id": "cid",
                "client_secret": cls.sim.client_secret,
                "overrides": {"upstream": cls.sim.url,
                              "token_url": cls.sim.url + "/api/user-web/oauth/token"}})
            cfg["connections"].append({
                "id": name, "integration": name, "grant": "refresh_token",
                "credentials": {"refresh_token": cls.seeds[name], "api_key": API_KEY}})
        cls.gw = Gateway(W.path, cfg, name="token-body").start()

    @classmethod
    def tearDownClass(cls):
        cls.gw.stop()
        cls.sim.stop()
        leaks = scan_for_secrets([cls.gw.log_path], extra=[API_KEY])
        assert not leaks, "secrets in the gateway's log: %r" % leaks

    def test_json_body_with_the_header_gets_tokens(self):
        status, _, body = self.gw.request("GET", "/json/v1/leads")
        self.assertEqual(status, 200, body)
        self.assertTrue(json.loads(body)["authorized"])
        self.assertGreaterEqual(self.sim.state()["json_token_requests"], 1)

    def test_a_form_body_is_refused_by_a_json_only_vendor(self):
        status, _, body = self.gw.request("GET", "/form/v1/leads")
        self.assertEqual(status, 503, body)
        self.assertEqual(json.loads(body)["error"], "credential_unavailable")

    def test_the_missing_header_is_refused(self):
        status, _, body = self.gw.request("GET", "/noheader/v1/leads")
        self.assertEqual(status, 503, body)
        self.assertEqual(json.loads(body)["error"], "credential_unavailable")


if __name__ == "__main__":
    unittest.main()
