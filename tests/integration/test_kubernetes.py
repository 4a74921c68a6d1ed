"""The Kubernetes manifests (deploy/kubernetes/, docs/cluster.md) checked with kubectl.

No API server can run on these machines, and `kubectl create/apply --dry-run=client` still
asks the server for its API discovery (to map apiVersion + kind to a resource) before it
does anything: with no server it fails with "unable to recognize ... connection refused" for
every document. kubectl reads that discovery from its cache directory first, so the test
writes the cache a server would have left for the standard groups the manifests use (core
v1, apps/v1), with `--server` pointing at a closed port, and runs
`kubectl create --dry-run=client --validate=false -o json`: kubectl then parses every
document, maps its kind and prints the objects, all offline. Field schema
validation (--validate) needs the server's OpenAPI document and is not done. Broken
manifests (bad YAML, an unknown kind or version, no kind) are checked to fail, so the check can fail.
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import unittest

from harness import ROOT

MANIFESTS = os.path.join(ROOT, "deploy", "kubernetes")
KUBECTL = shutil.which("kubectl")
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
# What an API server's discovery says about the kinds the manifests use (and a few more).
RESOURCES = {
    "v1": [("services", "Service", True), ("namespaces", "Namespace", False), ("secrets", "Secret", True),
           ("configmaps", "ConfigMap", True), ("serviceaccounts", "ServiceAccount", True),
           ("persistentvolumeclaims", "PersistentVolumeClaim", True)],
    "apps/v1": [("statefulsets", "StatefulSet", True), ("daemonsets", "DaemonSet", True),
                ("deployments", "Deployment", True)],
}


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the socket is: nothing answers there


def write_discovery_cache(cache, hostport):
    base = os.path.join(cache, "discovery", hostport.replace(":", "_"))
    os.makedirs(base)
    groups = []
    for gv in RESOURCES:
        group, _, version = gv.rpartition("/")
        groups.append({"name": group, "versions": [{"groupVersion": gv, "version": version}],
                       "preferredVersion": {"groupVersion": gv, "version": version}})
        d = os.path.join(base, *gv.split("/"))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "serverresources.json"), "w") as f:
            json.dump({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
                {"name": n, "singularName": k.lower(), "namespaced": ns, "kind": k, "verbs": VERBS}
                for n, k, ns in RESOURCES[gv]]}, f)
    with open(os.path.join(base, "servergroups.json"), "w") as f:
        json.dump({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}, f)


@unittest.skipUnless(KUBECTL, "kubectl is not installed (tools/setup installs kubernetes-client)")
class KubernetesManifestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="fv-k8s-")
        cls.server = "127.0.0.1:%d" % closed_port()
        cls.cache = os.path.join(cls.work, "cache")
        write_discovery_cache(cls.cache, cls.server)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work, ignore_errors=True)

    def kubectl_create(self, path):
        env = dict(os.environ, HOME=self.work, KUBECONFIG=os.devnull)
        return subprocess.run([KUBECTL, "--kubeconfig", os.devnull, "--server", "http://" + self.server,
                               "--cache-dir", self.cache, "--request-timeout", "5s",
                               "create", "--dry-run=client", "--validate=false", "-o", "json", "-f", path],
                              capture_output=True, text=True, timeout=60, env=env)

    def test_shipped_manifests_pass_kubectl_offline(self):
        run = self.kubectl_create(MANIFESTS)
        self.assertEqual(run.returncode, 0, run.stderr)
        # One JSON object per document (a List when there are several).
        decoder, text, objects = json.JSONDecoder(), run.stdout.strip(), []
        while text:
            obj, end = decoder.raw_decode(text)
            objects += obj["items"] if obj.get("kind") == "List" else [obj]
            text = text[end:].strip()
        kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)  # each has a name
        self.assertEqual([k for k, _ in kinds], ["DaemonSet", "Deployment", "Namespace", "Service", "Service",
                                                 "StatefulSet"], kinds)
        by_kind = {o["kind"]: o for o in objects}
        # What docs/cluster.md says of them.
        etcd = by_kind["StatefulSet"]["spec"]
        self.assertEqual(etcd["replicas"], 3)
        self.assertTrue(etcd.get("volumeClaimTemplates"), "etcd members need a volume each")
        node = by_kind["DaemonSet"]["spec"]["template"]["spec"]
        container = node["containers"][0]
        self.assertTrue(container["securityContext"]["privileged"])
        args = " ".join(container.get("args", []) + container.get("command", []))
        for flag in ("--store", "--advertise", "--basic-auth-dir"):
            self.assertIn(flag, args)
        self.assertEqual(container["readinessProbe"]["httpGet"]["path"], "/healthz")
        self.assertEqual(by_kind["Deployment"]["spec"]["replicas"], 2)

    def test_broken_manifests_fail(self):
        good = ("apiVersion: v1\nkind: Service\nmetadata:\n  name: ok\nspec:\n  ports:\n  - port: 80\n")
        broken = {
            "yaml": "apiVersion: v1\nkind: Service\nmetadata:\n  name: [unclosed\n",
            "kind": good.replace("kind: Service", "kind: Servise"),
            "version": good.replace("apiVersion: v1", "apiVersion: apps/v9"),
            "no-kind": good.replace("kind: Service\n", ""),
        }
        path = os.path.join(self.work, "ok.yaml")
        with open(path, "w") as f:
            f.write(good)
        run = self.kubectl_create(path)
        self.assertEqual(run.returncode, 0, run.stderr)  # the control: the check passes a good one
        for what, text in broken.items():
            path = os.path.join(self.work, what + ".yaml")
            with open(path, "w") as f:
                f.write(text)
            run = self.kubectl_create(path)
            self.assertNotEqual(run.returncode, 0, "%s: kubectl took %r: %s" % (what, text, run.stdout))
