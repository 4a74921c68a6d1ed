"""Images from a peer (docs/cluster.md): an image uploaded to one node of a tools/cluster
cluster is fetched, over HTTP with the nodes' basic auth and every digest checked, by the
other nodes when they first need it: a function deployed on it runs on every node. A peer
that serves a corrupt copy, or another image, is refused (logged, not used): another peer, or a later attempt,
gives a good one, and until then the function answers 503 naming its image. Nothing is left
in any node's work directory.
"""

import hashlib
import http.client
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

from harness import BUILD, ECHO_IMAGE, ROOT, BasicAuth, scaled, wait_until
from test_cluster import CLUSTER, HAVE_ENGINES, alive, free_port
from test_shutdown import reap_late_orphans

mkoci = importlib.machinery.SourceFileLoader("mkoci", os.path.join(ROOT, "tools", "mkoci")).load_module()
IMAGE_BUILD = os.environ.get("FAASVISOR_IMAGE_BUILD", BUILD)
ECHO_BINARY = os.path.join(IMAGE_BUILD, "examples", "echo", "echo")


def echo_image(path, noise_bytes):
    """An OCI layout tar: the static echo function, and a layer of incompressible noise that
    makes the image's size (and its digest its own)."""
    with open(ECHO_BINARY, "rb") as f:
        binary = f.read()
    layers = [mkoci.layer_from_entries([mkoci.entry("echo", data=binary, mode=0o755)]),
              mkoci.layer_from_entries([mkoci.entry("noise", data=os.urandom(noise_bytes))])]
    return mkoci.write_layout(path, layers, entrypoint=["/echo"], as_tar=True)


@unittest.skipUnless(HAVE_ENGINES and os.path.exists("/usr/bin/crun"),
                     "etcd-server, haproxy and crun are needed (tools/setup installs them)")
class PeerImageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.auth = BasicAuth()
        cls.work = tempfile.mkdtemp(prefix="fv-peer-")
        cls.dir = os.path.join(cls.work, "cluster")
        cls.listen = "127.0.0.1:%d" % free_port()
        run = subprocess.run([sys.executable, CLUSTER, "start", "--nodes", "3", "--dir", cls.dir,
                              "--listen", cls.listen, "--build", BUILD, "--no-examples",
                              "--node-arg=--basic-auth-dir", "--node-arg=" + cls.auth.dir],
                             capture_output=True, text=True, timeout=scaled(90))
        if run.returncode != 0:
            shutil.rmtree(cls.work, ignore_errors=True)
            cls.auth.remove()
            raise AssertionError("tools/cluster start failed:\n" + run.stderr)
        with open(os.path.join(cls.dir, "nodes.json")) as f:
            cls.state = json.load(f)
        cls.nodes = [n["listen"] for n in cls.state["nodes"]]
        cls.caches = [n["image_cache"] for n in cls.state["nodes"]]

    @classmethod
    def tearDownClass(cls):
        with open(os.path.join(cls.dir, "nodes.json")) as f:
            state = json.load(f)
        pids = [n["pid"] for n in state["nodes"]] + [e["pid"] for e in state["etcd"]]
        pids += [state["haproxy"]["pid"], state["generator"]["pid"]]
        run = subprocess.run([sys.executable, CLUSTER, "stop", "--dir", cls.dir],
                             capture_output=True, text=True, timeout=scaled(60))
        reap_late_orphans()
        left = [p for p in pids if alive(p)]
        shutil.rmtree(cls.work, ignore_errors=True)
        cls.auth.remove()
        if run.returncode != 0 or left:
            raise AssertionError("tools/cluster stop: rc %d, left %s: %s" % (run.returncode, left, run.stderr))

    # -- helpers --

    def request(self, hostport, method, path, body=None, auth=True, timeout=30.0):
        host, port = hostport.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=scaled(timeout))
        headers = {"Authorization": self.auth.header()} if auth else {}
        try:
            conn.request(method, path, body=json.dumps(body) if isinstance(body, dict) else body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def upload(self, node, tar):
        with open(tar, "rb") as f:
            data = f.read()
        status, body = self.request(node, "POST", "/system/images", data, timeout=120)
        self.assertEqual(status, 200, body)
        return json.loads(body)

    def deploy(self, hostport, name, digest):
        status, body = self.request(hostport, "POST", "/system/functions",
                                    {"service": name, "image": digest, "annotations": {"faasvisor.backend": "crun"},
                                     "limits": {"memory": "64Mi"}}, timeout=120)
        self.assertEqual(status, 202, body)

    def answers(self, node, name):
        payload = ("%s on %s" % (name, node)).encode()
        status, body = self.request(node, "POST", "/function/" + name, payload, auth=False)
        return status == 200 and body == payload

    def log(self, i):
        with open(os.path.join(self.dir, "logs", "node%d.log" % i), errors="replace") as f:
            return f.read()

    def layout(self, i, digest):
        return os.path.join(self.caches[i], "sha256", digest.split(":", 1)[1], "layout.tar")

    def assert_no_temp_files(self):
        for cache in self.caches:
            tmp = os.path.join(cache, "tmp")
            wait_until(lambda: not os.path.exists(tmp) or os.listdir(tmp) == [], scaled(10),
                       "%s to be empty" % tmp)

    def peer_order(self, i):
        """The order node i tries its peers in (their membership names, sorted)."""
        return sorted(n for j, n in enumerate(self.nodes) if j != i)

    # -- tests --

    def test_1_the_image_route_serves_the_uploaded_layout(self):
        tar = os.path.join(self.work, "small.tar")
        digest = echo_image(tar, 64 << 10)
        self.upload(self.nodes[0], tar)
        status, body = self.request(self.nodes[0], "GET", "/system/images/" + digest)
        self.assertEqual(status, 200, body[:200])
        with open(tar, "rb") as f:
            self.assertEqual(hashlib.sha256(body).hexdigest(), hashlib.sha256(f.read()).hexdigest())
        self.assertEqual(self.request(self.nodes[0], "GET", "/system/images/" + digest, auth=False)[0], 401)
        status, body = self.request(self.nodes[1], "GET", "/system/images/" + digest)
        self.assertEqual(status, 404, body)
        self.assertIn("not on this node", json.loads(body)["error"])
        self.assertEqual(self.request(self.nodes[0], "GET", "/system/images/sha256:xyz")[0], 400)

    def test_2_an_image_uploaded_to_one_node_runs_on_every_node(self):
        tar = os.path.join(self.work, "big.tar")
        digest = echo_image(tar, 24 << 20)
        size = os.path.getsize(tar)
        t0 = time.monotonic()
        self.upload(self.nodes[0], tar)
        upload_s = time.monotonic() - t0
        # A deploy on node 1, which lacks the image: it fetches it from node 0 first.
        t0 = time.monotonic()
        self.deploy(self.nodes[1], "peer-big", digest)
        fetch_s = time.monotonic() - t0
        print("\n  %.1f MiB image: upload + unpack on node 0 %.2f s; deploy on node 1 (fetch from node 0 + unpack) "
              "%.2f s (%.2fx); load %s" % (size / 2**20, upload_s, fetch_s, fetch_s / upload_s,
                                           open("/proc/loadavg").read().split()[0]), file=sys.stderr)
        self.assertIn("fetched from peer " + self.nodes[0], self.log(1))
        # Node 2 hears of the function through etcd and fetches it (from node 0 or 1).
        for i, node in enumerate(self.nodes):
            wait_until(lambda: self.answers(node, "peer-big"), scaled(30), "peer-big on node %d" % i)
            self.assertTrue(os.path.exists(self.layout(i, digest)), "node %d keeps the layout for peers" % i)
        # Through HAProxy too.
        self.assertTrue(self.answers(self.listen, "peer-big"))
        self.assert_no_temp_files()

    def test_3_a_corrupt_copy_is_refused_and_a_later_attempt_succeeds(self):
        tar = os.path.join(self.work, "corrupt-me.tar")
        digest = echo_image(tar, 2 << 20)
        self.upload(self.nodes[0], tar)
        held = self.layout(0, digest)
        with open(held, "rb") as f:
            good = f.read()
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0xFF  # inside the noise layer's blob
        with open(held, "wb") as f:
            f.write(bad)
        self.deploy(self.nodes[0], "peer-corrupt", digest)  # node 0 has the image unpacked
        self.assertTrue(self.answers(self.nodes[0], "peer-corrupt"))
        # Nodes 1 and 2 get only the corrupt copy: refused, logged, and the function answers
        # 503 naming its image there.
        for i in (1, 2):
            wait_until(lambda: "error: %s from peer %s" % (digest, self.nodes[0]) in self.log(i), scaled(15),
                       "node %d's refusal of the corrupt copy" % i)
            status, body = self.request(self.nodes[i], "POST", "/function/peer-corrupt", b"x", auth=False)
            self.assertEqual(status, 503, body)
            self.assertIn(digest, json.loads(body)["error"])
            self.assertIn("corrupt", self.log(i).split("error: %s" % digest, 1)[1].split("\n", 1)[0])
            self.assertFalse(os.path.exists(os.path.join(self.caches[i], "sha256", digest.split(":", 1)[1])),
                             "a refused copy reached node %d's cache" % i)
        self.assert_no_temp_files()
        # The good copy back on node 0: the next attempt (backed off, at most 8 s) uses it.
        with open(held + ".new", "wb") as f:
            f.write(good)
        os.replace(held + ".new", held)
        for i in (1, 2):
            wait_until(lambda: self.answers(self.nodes[i], "peer-corrupt"), scaled(30), "peer-corrupt on node %d" % i)
        self.assert_no_temp_files()

    def test_4_a_peer_with_another_image_is_passed_over_for_another(self):
        tar = os.path.join(self.work, "two-holders.tar")
        digest = echo_image(tar, 1 << 20)
        self.upload(self.nodes[0], tar)
        self.upload(self.nodes[1], tar)
        # Node 2 tries its peers in order: the first one serves another (valid) image under
        # this digest's name.
        first = self.nodes.index(self.peer_order(2)[0])
        second = self.nodes.index(self.peer_order(2)[1])
        other = os.path.join(self.work, "impostor.tar")
        echo_image(other, 1 << 20)
        held = self.layout(first, digest)
        shutil.copyfile(other, held + ".new")
        os.replace(held + ".new", held)
        self.deploy(self.nodes[first], "peer-two", digest)
        wait_until(lambda: self.answers(self.nodes[2], "peer-two"), scaled(15), "peer-two on node 2")
        log = self.log(2)
        refusal = "error: %s from peer %s: " % (digest, self.nodes[first])
        self.assertIn(refusal, log)
        self.assertIn("digest mismatch", log.split(refusal, 1)[1].split("\n", 1)[0])
        self.assertIn("%s fetched from peer %s" % (digest, self.nodes[second]), log)
        self.assert_no_temp_files()
