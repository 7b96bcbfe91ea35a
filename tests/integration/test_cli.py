"""The command line: --version, --check on the bundled example config and on broken configs,
and the exit codes of SPEC section 2."""
import os
import shutil
import socket
import subprocess
import unittest

from harness import GATEWAY_BIN, SOURCE, Workdir

W = Workdir()


def gateway(*args, timeout=20):
    return subprocess.run([GATEWAY_BIN, *args], capture_output=True, text=True, timeout=timeout)


class CliTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # The example config as a fresh clone has it, with the demo material run.sh makes.
        root = os.path.join(W.path, "clone")
        os.makedirs(os.path.join(root, "config"))
        shutil.copy(os.path.join(SOURCE, "config", "gateway.example.yaml"),
                    os.path.join(root, "config"))
        os.symlink(os.path.join(SOURCE, "policies"), os.path.join(root, "policies"))
        run = os.path.join(root, ".run")
        os.makedirs(os.path.join(run, "ca"))
        for name, value in (("store.key", "A" * 43 + "="), ("admin.token", "adm"),
                            ("client.secret", "cs"), ("demo.token", "dt"), ("demo.apikey", "ak"),
                            ("demo.refresh", "dr")):
            with open(os.path.join(run, name), "w") as f:
                f.write(value + "\n")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                        os.path.join(run, "ca", "ca.key"), "-out", os.path.join(run, "ca", "ca.pem"),
                        "-days", "1", "-subj", "/CN=t"], check=True, capture_output=True)
        cls.example = os.path.join(root, "config", "gateway.example.yaml")

    def test_redis_example_checks(self):
        env = dict(os.environ, GATEWAY_ADMIN_TOKEN="a", GATEWAY_STORE_KEY="A" * 43 + "=",
                   GATEWAY_REDIS_PASSWORD="p", CHIME_CLIENT_ID="c", CHIME_CLIENT_SECRET="s",
                   CHIME_REFRESH_TOKEN="r")
        r = subprocess.run([GATEWAY_BIN, "--config",
                            os.path.join(SOURCE, "config", "gateway.redis.example.yaml"), "--check"],
                           capture_output=True, text=True, env=env, timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("store redis", r.stdout)

    def test_version(self):
        r = gateway("--version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^gateway \d+\.\d+\.\d+")

    def test_check_prints_summary_table(self):
        r = gateway("--config", self.example, "--check")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        header = [l for l in lines if l.startswith("INTEGRATION")]
        self.assertEqual(len(header), 1, r.stdout)
        for integration, policy, where in (("chime", "chime", "header Authorization"),
                                           ("chip", "chip", "query access_token"),
                                           ("zendesk", "zendesk-chat", "header Authorization"),
                                           ("comm100", "comm100-apikey", "basic auth")):
            row = [l for l in lines if l.split()[:2] == [integration, policy]]
            self.assertEqual(len(row), 1, r.stdout)
            self.assertIn(where, row[0])
        self.assertNotIn("dt", r.stdout.split())  # the demo token is not printed

    def test_check_mistyped_key(self):
        with open(self.example) as f:
            text = f.read()
        lines = text.splitlines()
        index = next(i for i, l in enumerate(lines) if l.startswith("    default_connection:"))
        lines[index] = lines[index].replace("default_connection", "default_conection")
        broken = os.path.join(os.path.dirname(self.example), "broken.yaml")
        with open(broken, "w") as f:
            f.write("\n".join(lines) + "\n")
        r = gateway("--config", broken, "--check")
        self.assertEqual(r.returncode, 2)
        self.assertIn("broken.yaml:%d: integrations[0].default_conection: unknown key" % (index + 1),
                      r.stderr)
        # serve mode refuses the same config with the same exit code
        self.assertEqual(gateway("--config", broken).returncode, 2)

    def test_check_every_problem_on_its_line(self):
        path = os.path.join(W.path, "many.yaml")
        with open(path, "w") as f:
            f.write("store: {kind: memory}\n"
                    "policies: [%s]\n"
                    "threads: many\n"
                    "integrations:\n"
                    "  - name: chime\n"
                    "    policy: chmie\n"
                    "connections:\n"
                    "  - id: x\n"
                    "    integration: chime\n"
                    "    grant: magic\n" % os.path.join(SOURCE, "policies"))
        r = gateway("--config", path, "--check")
        self.assertEqual(r.returncode, 2)
        self.assertIn("many.yaml:3: threads:", r.stderr)
        self.assertIn("many.yaml:10: connections[0].grant:", r.stderr)
        path2 = os.path.join(W.path, "policy.yaml")
        with open(path2, "w") as f:
            f.write("store: {kind: memory}\npolicies: [%s]\nintegrations:\n  - name: chime\n"
                    "    policy: chmie\n" % os.path.join(SOURCE, "policies"))
        r = gateway("--config", path2, "--check")
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr.strip(),
                         'policy.yaml:5: integrations[0].policy: no policy named "chmie"')

    def test_missing_env_and_file(self):
        path = os.path.join(W.path, "env.yaml")
        with open(path, "w") as f:
            f.write("store: {kind: file, key: \"${env:GW_TEST_NOT_SET}\"}\n"
                    "admin: {token: \"${file:nope.txt}\"}\n")
        r = gateway("--config", path, "--check")
        self.assertEqual(r.returncode, 2)
        self.assertIn("GW_TEST_NOT_SET", r.stderr)
        self.assertIn("nope.txt", r.stderr)
        self.assertEqual(gateway("--config", os.path.join(W.path, "absent.yaml")).returncode, 2)

    def test_port_taken_exits_1(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        path = os.path.join(W.path, "taken.yaml")
        with open(path, "w") as f:
            f.write("listen: {port: %d}\nadmin: {port: 0}\nstore: {kind: memory}\n"
                    "policies: [%s]\n" % (port, os.path.join(SOURCE, "policies")))
        try:
            r = gateway("--config", path)
        finally:
            s.close()
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot listen", r.stderr)

    def test_second_gateway_on_the_same_port_exits_1(self):
        from harness import Gateway, base_config
        cfg = base_config("", W.path)
        del cfg["upstream"]["ca_file"]
        first = Gateway(W.path, cfg, name="first").start()
        try:
            cfg2 = dict(cfg, listen={"address": "127.0.0.1", "port": first.port})
            path = os.path.join(W.path, "second.yaml")
            with open(path, "w") as f:
                import json
                f.write(json.dumps(cfg2))
            r = gateway("--config", path)
            self.assertEqual(r.returncode, 1)
            self.assertIn("cannot listen", r.stderr)
        finally:
            first.stop()


if __name__ == "__main__":
    unittest.main()
