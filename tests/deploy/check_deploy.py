#!/usr/bin/python3
"""Checks deploy/ without a cluster: every manifest parses, the sidecar has its probes,
resources, a non-root read-only security context and its metrics port, the alert rules pass
promtool, the dashboard is valid JSON, and the Dockerfile runs as a non-root user."""
import glob
import json
import os
import subprocess
import sys
import unittest

import yaml  # Debian's python3-yaml, hence /usr/bin/python3

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy")


def documents():
    for path in sorted(glob.glob(os.path.join(ROOT, "kubernetes", "*.yaml"))):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    yield path, doc


class DeployTest(unittest.TestCase):
    def test_manifests_parse_with_kind_and_name(self):
        docs = list(documents())
        self.assertGreaterEqual(len(docs), 5)
        for path, doc in docs:
            self.assertIn("apiVersion", doc, path)
            self.assertIn("kind", doc, path)
            self.assertTrue(doc["metadata"]["name"], path)

    def test_sidecar(self):
        deployments = [d for _, d in documents() if d["kind"] == "Deployment"]
        self.assertTrue(deployments)
        for dep in deployments:
            spec = dep["spec"]["template"]["spec"]
            gw = [c for c in spec["containers"] if c["name"] == "gateway"]
            self.assertEqual(len(gw), 1, "a gateway sidecar")
            gw = gw[0]
            ports = {p["name"]: p["containerPort"] for p in gw["ports"]}
            self.assertEqual(ports.get("metrics"), 9090)
            self.assertEqual(gw["livenessProbe"]["httpGet"]["path"], "/healthz")
            self.assertEqual(gw["readinessProbe"]["httpGet"]["path"], "/readyz")
            for probe in ("livenessProbe", "readinessProbe"):
                self.assertIn(gw[probe]["httpGet"]["port"], ("metrics", 9090))
            for part in ("requests", "limits"):
                self.assertIn("memory", gw["resources"][part])
                self.assertIn("cpu", gw["resources"][part])
            sc = gw["securityContext"]
            self.assertTrue(sc["runAsNonRoot"])
            self.assertNotEqual(sc.get("runAsUser", spec["securityContext"].get("runAsUser")), 0)
            self.assertTrue(sc["readOnlyRootFilesystem"])
            self.assertFalse(sc["allowPrivilegeEscalation"])
            self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
            mounts = {m["mountPath"] for m in gw["volumeMounts"]}
            cm_name = [v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v][0]
            cm = [d for _, d in documents() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == cm_name]
            self.assertEqual(len(cm), 1, "the sidecar's ConfigMap %s is in deploy/" % cm_name)
            store = yaml.safe_load(cm[0]["data"]["gateway.yaml"])["store"]
            if store["kind"] == "file":  # a file store must live on a volume, not the read-only root
                self.assertIn(os.path.dirname(store["path"]), mounts)
            else:
                self.assertEqual(store["kind"], "redis")
            annotations = dep["spec"]["template"]["metadata"]["annotations"]
            self.assertEqual(annotations["prometheus.io/port"], "9090")

    def test_config_in_configmap_is_a_gateway_config(self):
        cms = [d for _, d in documents() if d["kind"] == "ConfigMap" and "gateway.yaml" in d["data"]]
        self.assertGreaterEqual(len(cms), 2)
        for cm in cms:
            cfg = yaml.safe_load(cm["data"]["gateway.yaml"])
            self.assertEqual(cfg["admin"]["port"], 9090)
            self.assertEqual(cfg["listen"]["address"], "127.0.0.1")  # the pod's app only
            self.assertIn(cfg["store"]["kind"], ("file", "redis"))

    def test_alert_rules(self):
        r = subprocess.run(["promtool", "check", "rules", os.path.join(ROOT, "prometheus", "alerts.yaml")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # The alerts fire on the series they are about (dropped health events, pending records).
        r = subprocess.run(["promtool", "test", "rules",
                            os.path.join(os.path.dirname(os.path.abspath(__file__)), "alerts_test.yaml")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_dashboard(self):
        with open(os.path.join(ROOT, "grafana", "gateway-dashboard.json")) as f:
            d = json.load(f)
        exprs = " ".join(t["expr"] for p in d["panels"] for t in p["targets"])
        for metric in ("gateway_requests_total", "gateway_request_duration_seconds_bucket",
                       "gateway_token_refreshes_total", "gateway_auth_retries_total",
                       "gateway_connections"):
            self.assertIn(metric, exprs)

    def test_dockerfile_runs_unprivileged(self):
        with open(os.path.join(ROOT, "Dockerfile")) as f:
            text = f.read()
        self.assertIn("FROM debian:12 AS build", text)
        self.assertIn("FROM debian:12-slim", text)
        users = [l.split()[1] for l in text.splitlines() if l.startswith("USER ")]
        self.assertTrue(users and not users[-1].startswith("0") and users[-1] != "root")


if __name__ == "__main__":
    unittest.main()
