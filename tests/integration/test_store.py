"""The durable function store (--state-dir, docs/store.md): a restarted node has every
function it acknowledged, with its definition, scale and generation; a deletion stays
deleted; a node SIGKILLed in the middle of a deploy/update/delete storm loses no
acknowledged change and never reads a half-written record; what a killed node left
(instances, containers, their cgroups and runtime state) is removed when the next node starts.
"""

import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

from harness import (DAEMON, ECHO_IMAGE, HASH_IMAGE, MISBEHAVE_IMAGE, TEST_IMAGE_ROOTS, TIME_SCALE, Daemon, proc_stat,
                     scaled, wait_until)
from test_containers import build_images, rootfs
from test_images import IMAGES, build_oci_images
from test_shutdown import reap_late_orphans

CRUN = shutil.which("crun") and os.path.exists("/usr/bin/unshare")
RUNC = shutil.which("runc")
RUNSC = shutil.which("runsc")

# The fields of a definition that must come back exactly after a restart.
DEFINITION = ("name", "image", "envProcess", "envVars", "labels", "annotations", "limits", "createdAt")


def definition(fn):
    out = {k: fn[k] for k in DEFINITION}
    out["backend"] = fn["faasvisor"]["backend"]
    out["generation"] = fn["faasvisor"]["generation"]
    for k in ("imageDigest", "rootfs", "maxInstances", "timeoutMs"):
        out[k] = fn["faasvisor"].get(k)
    return out


class StoreCase(unittest.TestCase):
    def setUp(self):
        self.state = tempfile.mkdtemp(prefix="fv-store-test-")
        self.cache = tempfile.mkdtemp(prefix="fv-store-images-")
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            if d.proc is not None:
                d.proc.kill()
                d.finish(timeout=scaled(10))
        reap_late_orphans()
        shutil.rmtree(self.state, ignore_errors=True)
        shutil.rmtree(self.cache, ignore_errors=True)

    def start(self, *flags):
        d = Daemon("--state-dir", self.state, "--stem-pool", "2", "--image-cache", self.cache, *flags).start()
        self.daemons.append(d)
        return d

    def stop_clean(self, d):
        problems = d.stop(settle=False)
        self.assertEqual(problems, [], "\n".join(problems))

    def definitions(self, d):
        r = d.get("/system/functions")
        self.assertEqual(r.status, 200)
        return {fn["name"]: definition(fn) for fn in r.json()}

    def post(self, d, path, body, method="POST", expect=202):
        r = d.request(method, path, body)
        self.assertEqual(r.status, expect, r.body)
        return r


class RestartTests(StoreCase):
    def test_state_dir_is_private_and_locked(self):
        d = self.start()
        self.assertEqual(os.stat(self.state).st_mode & 0o777, 0o700)
        # A second node on the same directory refuses to start instead of sharing it.
        other = subprocess.run([DAEMON, "--listen", "127.0.0.1:0", "--state-dir", self.state, "--stem-pool", "0",
                                "--accel=tcg"], capture_output=True, text=True, timeout=scaled(20))
        self.assertEqual(other.returncode, 1)
        self.assertIn("another node", other.stderr)
        self.assertEqual(d.get("/system/info").json()["faasvisor"]["state"]["store"], "file:" + self.state)
        self.stop_clean(d)

    def test_restart_keeps_every_function_scale_and_deletion(self):
        d = self.start()
        self.post(d, "/system/functions", {
            "service": "echo", "image": ECHO_IMAGE, "envProcess": "./echo",
            "envVars": {"GREETING": "hi there", "EMPTY": ""},
            "labels": {"com.openfaas.scale.max": "7", "team": "a"},
            "annotations": {"faasvisor.timeout": "5s", "note": "x\"y"},
            "limits": {"memory": "64Mi", "cpu": "500m"}})
        self.post(d, "/system/functions", {"service": "hash", "image": HASH_IMAGE, "envProcess": "./hash"})
        self.post(d, "/system/functions", {"service": "gone", "image": ECHO_IMAGE, "envProcess": "./echo"})
        # An update makes generation 2; it must come back as such.
        self.post(d, "/system/functions", {"service": "hash", "image": HASH_IMAGE, "envProcess": "./hash",
                                           "envVars": {"V": "2"}}, method="PUT")
        self.post(d, "/system/scale-function/echo", {"serviceName": "echo", "replicas": 2})
        self.post(d, "/system/functions", {"functionName": "gone"}, method="DELETE")
        if CRUN:
            build_images()
            self.post(d, "/system/functions", {
                "service": "echo-crun", "image": rootfs("echo"), "envProcess": "/echo",
                "annotations": {"faasvisor.backend": "crun"}})
            # An OCI image: unpacked at deploy, restored from its resolved digest and rootfs.
            build_oci_images()
            self.post(d, "/system/functions", {
                "service": "echo-oci", "image": os.path.join(IMAGES, "echo.oci"),
                "annotations": {"faasvisor.backend": "crun"}})
        before = self.definitions(d)
        if CRUN:
            self.assertTrue(before["echo-oci"]["imageDigest"].startswith("sha256:"))
        self.assertEqual(before["hash"]["generation"], 2)
        self.assertNotIn("gone", before)
        self.stop_clean(d)

        d2 = self.start()
        after = self.definitions(d2)
        self.assertEqual(after, before)
        # Scale came back: two instances are pre-booted again.
        d2.wait_warm("echo", 2)
        r = d2.invoke("echo", b"hello")
        self.assertEqual((r.status, r.body), (200, b"hello"))
        self.assertEqual(d2.invoke("hash", b"abc").status, 200)
        if CRUN:
            r = d2.invoke("echo-crun", b"in a container")
            self.assertEqual((r.status, r.body), (200, b"in a container"))
            r = d2.invoke("echo-oci", b"from an image")
            self.assertEqual((r.status, r.body), (200, b"from an image"))
            # Nothing was resolved again: the record had the image.
            self.assertEqual(d2.get("/system/info").json()["faasvisor"]["images"]["resolved"], 0)
        # A deletion and a scale-down after the restart persist too.
        self.post(d2, "/system/functions", {"functionName": "hash"}, method="DELETE")
        self.post(d2, "/system/scale-function/echo", {"serviceName": "echo", "replicas": 0})
        self.stop_clean(d2)

        d3 = self.start()
        after = self.definitions(d3)
        self.assertNotIn("hash", after)
        self.assertIn("echo", after)
        time.sleep(0.3)
        self.assertEqual(d3.function("echo")["replicas"], 0)
        # The same name deploys again after its deletion (409 only for a live function).
        self.post(d3, "/system/functions", {"service": "hash", "image": HASH_IMAGE, "envProcess": "./hash"})
        self.post(d3, "/system/functions", {"service": "hash", "image": HASH_IMAGE, "envProcess": "./hash"},
                  expect=409)
        self.stop_clean(d3)

    @unittest.skipUnless(CRUN, "crun is not installed")
    def test_an_image_gone_from_the_cache_is_unpacked_again(self):
        build_oci_images()
        d = self.start()
        self.post(d, "/system/functions", {"service": "echo-oci", "image": os.path.join(IMAGES, "echo.oci"),
                                           "annotations": {"faasvisor.backend": "crun"}})
        self.post(d, "/system/scale-function/echo-oci", {"serviceName": "echo-oci", "replicas": 1})
        old = self.definitions(d)["echo-oci"]
        self.stop_clean(d)
        shutil.rmtree(self.cache)  # the image cache is wiped while the node is down
        d2 = self.start()
        # The backend needs the rootfs: the function is back once its image is unpacked again.
        wait_until(lambda: "echo-oci" in self.definitions(d2), scaled(60), "echo-oci to be restored")
        d2.wait_warm("echo-oci", 1)  # its scale target waited for it
        r = d2.invoke("echo-oci", b"back")
        self.assertEqual((r.status, r.body), (200, b"back"))
        now = self.definitions(d2)["echo-oci"]
        self.assertEqual(now["imageDigest"], old["imageDigest"])
        self.assertTrue(os.path.isdir(now["rootfs"]))
        self.stop_clean(d2)

    def test_damaged_records_are_skipped_and_temp_files_removed(self):
        d = self.start()
        self.post(d, "/system/functions", {"service": "good", "image": ECHO_IMAGE, "envProcess": "./echo"})
        self.post(d, "/system/functions", {"service": "bad", "image": ECHO_IMAGE, "envProcess": "./echo"})
        self.stop_clean(d)
        fdir = os.path.join(self.state, "function")
        with open(os.path.join(fdir, "bad"), "r+b") as f:
            f.seek(20)
            f.write(b"\x00garbage")  # the checksum no longer matches
        with open(os.path.join(fdir, ".interrupted.tmp"), "wb") as f:
            f.write(b"FVR1 half")
        d2 = self.start()
        self.assertEqual(set(self.definitions(d2)), {"good"})
        self.assertFalse(os.path.exists(os.path.join(fdir, ".interrupted.tmp")))
        self.assertIn("skipping", d2.log_text(last=1000))
        self.assertEqual(d2.invoke("good", b"x").status, 200)
        self.stop_clean(d2)

    def test_a_restart_with_narrower_image_roots_restores_only_what_they_allow(self):
        fn_dir = tempfile.mkdtemp(prefix="fv-store-root-", dir="/var/tmp")
        self.addCleanup(shutil.rmtree, fn_dir, True)
        os.chmod(fn_dir, 0o755)  # the function runs as an unprivileged user
        shutil.copy(os.path.join(ECHO_IMAGE, "echo"), fn_dir)
        d = self.start()
        self.post(d, "/system/functions", {"service": "inside", "image": ECHO_IMAGE, "envProcess": "./echo"})
        self.post(d, "/system/functions", {"service": "outside", "image": fn_dir, "envProcess": "./echo"})
        self.stop_clean(d)
        narrow = tuple(r for r in TEST_IMAGE_ROOTS if r != "/var/tmp")
        d2 = Daemon("--state-dir", self.state, "--stem-pool", "0", "--image-cache", self.cache,
                    image_roots=narrow).start()
        self.daemons.append(d2)
        self.assertEqual(set(self.definitions(d2)), {"inside"})
        self.assertIn("outside the image roots", d2.log_text(last=1000))
        self.stop_clean(d2)
        # The record was kept: the roots widened again, the function is back.
        d3 = self.start()
        self.assertEqual(set(self.definitions(d3)), {"inside", "outside"})
        self.assertEqual(d3.invoke("outside", b"x").status, 200)
        self.stop_clean(d3)

    def test_without_a_store_nothing_survives(self):
        d = Daemon("--state-dir", "none", "--stem-pool", "0").start()
        self.daemons.append(d)
        self.assertFalse(d.get("/system/info").json()["faasvisor"]["state"]["durable"])
        self.post(d, "/system/functions", {"service": "echo", "image": ECHO_IMAGE, "envProcess": "./echo"})
        self.assertEqual(d.invoke("echo", b"x").status, 200)
        self.stop_clean(d)
        d2 = Daemon("--state-dir", "none", "--stem-pool", "0").start()
        self.daemons.append(d2)
        self.assertEqual(self.definitions(d2), {})
        self.stop_clean(d2)


class KilledNodeTests(StoreCase):
    def test_a_killed_nodes_instances_and_cgroups_are_removed_at_the_next_start(self):
        d = self.start("--stop-grace-ms", "500")
        self.post(d, "/system/functions", {"service": "echo", "image": ECHO_IMAGE, "envProcess": "./echo"})
        self.post(d, "/system/functions", {"service": "stuck", "image": MISBEHAVE_IMAGE,
                                           "envProcess": "./misbehave"})
        self.assertEqual(d.invoke("echo", b"x").status, 200)
        backends = []
        if CRUN or RUNC or RUNSC:
            build_images()
        for backend, ok in (("crun", CRUN), ("runc", RUNC), ("gvisor", RUNSC)):
            if not ok:
                continue
            backends.append(backend)
            self.post(d, "/system/functions", {
                "service": "stuck-" + backend, "image": rootfs("misbehave"), "envProcess": "/misbehave",
                "annotations": {"faasvisor.backend": backend, "faasvisor.timeout": "60s"}})
        # Invocations that hang: their instances would outlive the node if nothing killed them.
        hanging = []
        for name in ["stuck"] + ["stuck-" + b for b in backends]:
            t = threading.Thread(target=self.swallow, args=(d, name), daemon=True)
            t.start()
            hanging.append(t)
        for name in ["stuck"] + ["stuck-" + b for b in backends]:
            wait_until(lambda: any(i["state"] == "busy" for i in d.instances(name)), scaled(20),
                       "an instance of %s to be busy" % name)
        d.record_children()
        killed_pid = d.pid
        cgroup_roots = list(d.cgroup_roots)
        recorded = dict(d.seen)
        self.assertTrue(recorded)
        d.proc.kill()
        d.proc.wait()
        d2 = self.start()
        m = re.search(r"swept \d+ dead nodes' cgroups: (\d+) processes killed", d2.log_text(last=1000))
        self.assertTrue(m, d2.log_text())
        # The hanging containers do not end with their runtime: the sweep killed them.
        self.assertGreaterEqual(int(m.group(1)), len(backends))
        # Orphans of the killed node come to us (the subreaper) and wait, as zombies, to be
        # reaped: only a process still running counts.
        def running(pid, start):
            st = proc_stat(pid)
            return st is not None and st[3] == start and st[1] not in ("Z", "X")
        left = [pid for pid, e in recorded.items() if running(pid, e["start"])]
        self.assertEqual(left, [], "processes of the killed node still run: %r"
                         % {p: recorded[p]["comm"] for p in left})
        for root in cgroup_roots:
            self.assertFalse(os.path.exists(root), "cgroup %s of the killed node is still there" % root)
        self.assertFalse(os.path.exists("/run/faasvisor/node-%d" % killed_pid),
                         "the killed node's container state is still there")
        # Its functions are back and run.
        self.assertEqual(d2.invoke("echo", b"again").body, b"again")
        problems = d.finish(timeout=scaled(5))
        # Expected of a SIGKILLed node: its exit status, and its dead children re-parented to
        # us (the subreaper) as zombies for us to reap. Nothing running, no cgroup.
        self.assertEqual([p for p in problems if "exited with -9" not in p and "state Z)" not in p], [])
        self.stop_clean(d2)

    @staticmethod
    def swallow(d, name):
        try:
            d.invoke(name, b"x", query="mode=hang", timeout=scaled(60))
        except (OSError, http.client.HTTPException):
            pass


class Storm:
    """Clients deploying, updating and deleting functions as fast as they are answered,
    each over its own names, recording what the node acknowledged."""

    def __init__(self, port, seed, threads=4, names_per_thread=3):
        self.port = port
        self.rng = random.Random(seed)
        # name -> state the node acknowledged last: None = absent, else the version string
        self.acked = {}
        self.pending = {}  # name -> state the op in flight would give (None: delete)
        self.ops = 0
        self.errors = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.names = [["s%d-%d" % (t, i) for i in range(names_per_thread)] for t in range(threads)]
        self.threads = [threading.Thread(target=self.run, args=(names, self.rng.random()), daemon=True)
                        for names in self.names]

    def start(self):
        for t in self.threads:
            t.start()

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(scaled(10))

    def run(self, names, seed):
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=scaled(10))
        with self.lock:
            state = {n: self.acked.get(n) for n in names}
        version = 0
        try:
            while not self.stop.is_set():
                name = rng.choice(names)
                version += 1
                v = "%s.%d" % (name, version)
                if state[name] is None:
                    method, body, new = "POST", self.spec(name, v), v
                elif rng.random() < 0.6:
                    method, body, new = "PUT", self.spec(name, v), v
                else:
                    method, body, new = "DELETE", {"functionName": name}, None
                with self.lock:
                    self.pending[name] = new
                conn.request(method, "/system/functions", body=json.dumps(body))
                r = conn.getresponse()
                r.read()
                if r.status != 202:
                    raise AssertionError("%s %s: %d" % (method, name, r.status))
                with self.lock:
                    del self.pending[name]
                    self.acked[name] = new
                    self.ops += 1
                state[name] = new
        except (OSError, http.client.HTTPException):
            pass  # the node was killed: the op in flight stays pending
        except AssertionError as e:
            self.errors.append(str(e))
        finally:
            conn.close()

    @staticmethod
    def spec(name, version):
        return {"service": name, "image": ECHO_IMAGE, "envProcess": "./echo",
                "envVars": {"VERSION": version}, "labels": {"v": version}}


class KillStormTests(StoreCase):
    # Enough in the release build; a sanitizer build (TIME_SCALE > 1) is several times slower.
    ROUNDS = 50 if TIME_SCALE <= 1 else 20

    def test_sigkill_during_a_storm_loses_no_acknowledged_change(self):
        rng = random.Random(int(os.environ.get("FV_STORM_SEED", "9")))
        total_ops = 0
        pending_seen = 0
        t0 = time.monotonic()
        for rnd in range(self.ROUNDS):
            d = Daemon("--state-dir", self.state, "--stem-pool", "0").start()
            self.daemons.append(d)
            if rnd > 0:
                self.check(d, expected, pending, rnd)
            storm = Storm(d.port, rng.random())
            # Start from what the node has now (the previous round's outcome).
            for fn in d.get("/system/functions").json():
                storm.acked[fn["name"]] = fn["envVars"].get("VERSION")
            storm.start()
            time.sleep(rng.uniform(0.02, 0.35) * TIME_SCALE)
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait()
            storm.join()
            d.finish(timeout=scaled(5))
            self.daemons.remove(d)
            total_ops += storm.ops
            self.assertEqual(storm.errors, [], "round %d" % rnd)
            with storm.lock:
                expected = dict(storm.acked)
                pending = dict(storm.pending)
            pending_seen += len(pending)
        d = Daemon("--state-dir", self.state, "--stem-pool", "0").start()
        self.daemons.append(d)
        self.check(d, expected, pending, self.ROUNDS)
        self.stop_clean(d)
        self.assertGreater(total_ops, self.ROUNDS * 5, "the storms did too little to test anything")
        print("storm: %d rounds, %d acknowledged changes, %d in flight at a kill, %.1f s"
              % (self.ROUNDS, total_ops, pending_seen, time.monotonic() - t0))

    def check(self, d, expected, pending, rnd):
        log = d.log_text(last=100000)
        self.assertNotIn("skipping", log, "round %d: a record was unreadable:\n%s" % (rnd, log))
        self.assertNotIn("cannot restore", log, "round %d:\n%s" % (rnd, log))
        have = {}
        for fn in d.get("/system/functions").json():
            have[fn["name"]] = fn["envVars"].get("VERSION")
            # A whole record: the labels were written with the same version as the env.
            self.assertEqual(fn["labels"].get("v"), have[fn["name"]], "round %d: mixed record" % rnd)
        for name in set(expected) | set(have) | set(pending):
            ok = {expected.get(name)}
            if name in pending:
                ok.add(pending[name])  # unacknowledged: either outcome is fine
            self.assertIn(have.get(name), ok,
                          "round %d: %s is %r, acknowledged %r (in flight: %r)"
                          % (rnd, name, have.get(name), expected.get(name), pending.get(name, "-")))


if __name__ == "__main__":
    unittest.main()
