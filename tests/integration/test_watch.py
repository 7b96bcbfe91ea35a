"""Watched files (SPEC 3, issue 17): a Kubernetes Secret mounted as a volume is updated by an
atomic swap of its `..data` symlink. The gateway picks up the new bootstrap API key and the new
client secret within 10 s without a signal, and a broken swap leaves the old config serving."""
import base64
import http.client
import json
import os
import time
import unittest

from harness import CA, Gateway, Sim, Workdir, base_config, scan_for_secrets, secret

W = Workdir()
CA_ = CA(W.path)
CERT, KEY = CA_.issue("sim", "IP:127.0.0.1,DNS:localhost")
ADMIN = secret("adm-" + os.urandom(8).hex())
OLD_KEY = secret("key-old-" + os.urandom(6).hex())
NEW_KEY = secret("key-new-" + os.urandom(6).hex())


class MountedSecret:
    """The layout kubelet writes: ..<timestamp>/<key> folders, ..data -> the current one, and
    each <key> -> ..data/<key>."""

    def __init__(self, root, values):
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.n = 0
        self.swap(values)
        for name in values:
            os.symlink(os.path.join("..data", name), os.path.join(root, name))

    def swap(self, values):
        self.n += 1
        folder = "..2026_12_01_%02d" % self.n
        os.makedirs(os.path.join(self.root, folder))
        for name, value in values.items():
            with open(os.path.join(self.root, folder, name), "w") as f:
                f.write(value + "\n")
        tmp = os.path.join(self.root, "..data_tmp")
        os.symlink(folder, tmp)
        os.replace(tmp, os.path.join(self.root, "..data"))  # rename(2): atomic, as kubelet does


class WatchedSecretTest(unittest.TestCase):
    def test_a_swapped_secret_is_used_within_10_s_and_a_broken_one_is_refused(self):
        comm = Sim("comm100", CERT, KEY, "--api-key", "agent@acme.example:" + OLD_KEY)
        chime_rt = secret("rt-seed-" + os.urandom(6).hex())
        chime = Sim("chime", CERT, KEY, "--client-id", "cid", "--seed-refresh", chime_rt,
                    "--rotate-refresh")
        mount = MountedSecret(os.path.join(W.path, "secret"),
                              {"api_key": OLD_KEY, "chime_secret": chime.client_secret})
        cfg = base_config(CA_.cert, W.path)
        cfg["admin"]["token"] = ADMIN
        cfg["integrations"] = [
            {"name": "comm100", "policy": "comm100-apikey",
             "overrides": {"upstream": comm.url + "/api/v2"}},
            {"name": "chime", "policy": "chime", "client_id": "cid",
             "client_secret": "${file:secret/chime_secret}",
             "overrides": {"upstream": chime.url,
                           "token_url": chime.url + "/api/user-web/oauth/token"}}]
        cfg["connections"] = [
            {"id": "agent", "integration": "comm100", "grant": "static",
             "credentials": {"email": "agent@acme.example", "api_key": "${file:secret/api_key}"}},
            {"id": "acme", "integration": "chime", "grant": "refresh_token",
             "credentials": {"refresh_token": chime_rt}}]
        gw = Gateway(W.path, cfg, name="watched").start()

        def sent_key():
            comm.control("/_sim/reset", {})
            gw.request("GET", "/comm100/livechat/agents")
            auth = [v for k, v in comm.requests()[-1]["headers"] if k == "Authorization"][0]
            return base64.b64decode(auth.split()[1]).decode().partition(":")[2]

        def force_refresh():
            c = http.client.HTTPConnection("127.0.0.1", gw.admin_port, timeout=10)
            c.request("POST", "/admin/connections/acme/refresh",
                      headers={"Authorization": "Bearer " + ADMIN})
            r = c.getresponse()
            body = r.read()
            c.close()
            return r.status, body

        try:
            self.assertEqual(sent_key(), OLD_KEY)
            self.assertEqual(force_refresh()[0], 200)
            # A new key, and a client secret the vendor does not know: the gateway must use
            # both, without a signal.
            wrong_secret = secret("cs-rotated-" + os.urandom(6).hex())
            mount.swap({"api_key": NEW_KEY, "chime_secret": wrong_secret})
            swapped = time.time()
            while time.time() - swapped < 10 and sent_key() != NEW_KEY:
                time.sleep(0.2)
            took = time.time() - swapped
            print("\n[measure] ..data swapped: the new API key is injected after %.1f s" % took)
            self.assertEqual(sent_key(), NEW_KEY)
            self.assertLess(took, 10)
            status, body = force_refresh()
            self.assertEqual(status, 502, body)  # the rotated secret went to the vendor
            self.assertIn(b"invalid_client", body)
            # A broken swap (the key file missing): refused, the old config keeps serving.
            mount.swap({"chime_secret": chime.client_secret})
            self.assertTrue(gw.wait_lines(
                lambda l: l.get("msg") == "config reload refused; the old config keeps serving",
                timeout=10))
            self.assertEqual(sent_key(), NEW_KEY)
            self.assertIsNone(gw.proc.poll())
        finally:
            gw.stop()
            comm.stop()
            chime.stop()
        leaks = scan_for_secrets([gw.log_path])
        self.assertFalse(leaks, "secrets in the gateway's log: %r" % leaks)


if __name__ == "__main__":
    unittest.main()
