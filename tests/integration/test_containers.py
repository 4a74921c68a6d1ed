"""The OCI container backends (crun, runc, gvisor): cold and warm starts, concurrent cold
starts, a crash, and nothing left behind (process, cgroup, runtime state, bundle).

Images are rootfs directories made by tools/mkimage in <build>/images. Each class is skipped
when its runtime is not installed (tools/setup installs crun, runc and runsc).
"""

import os
import shutil
import subprocess
import unittest

from harness import (BUILD, ECHO_IMAGE, HASH_IMAGE, MISBEHAVE_IMAGE, ROOT, DaemonTestCase, parallel, scaled,
                     wait_until)

# Images hold static function binaries. A sanitizer build's functions are not static, and
# what a sanitizer run checks is the node, so tools/test points this at the release build.
IMAGE_BUILD = os.environ.get("FAASVISOR_IMAGE_BUILD", BUILD)
IMAGES = os.path.join(IMAGE_BUILD, "images")


def rootfs(name):
    return os.path.join(IMAGES, name, "rootfs")


def build_images():
    # Made again when a function was rebuilt since (the copy in the rootfs would be stale).
    sources = {"echo": os.path.join(ECHO_IMAGE, "echo"), "hash": os.path.join(HASH_IMAGE, "hash"),
               "misbehave": os.path.join(MISBEHAVE_IMAGE, "misbehave"),
               "isolation": os.path.join(MISBEHAVE_IMAGE, "isolation")}

    def fresh(name):
        copy = os.path.join(rootfs(name), name)
        return os.path.exists(copy) and os.path.getmtime(copy) >= os.path.getmtime(sources[name])

    if all(fresh(n) for n in sources):
        return
    subprocess.run([os.path.join(ROOT, "tools", "mkimage"), IMAGE_BUILD], check=True,
                   stdout=subprocess.DEVNULL)


def container_spec(name, image, backend="crun", **extra):
    spec = {"service": name, "image": rootfs(image), "envProcess": "/" + image,
            "annotations": {"faasvisor.backend": backend}}
    spec.update(extra)
    return spec


@unittest.skipUnless(shutil.which("crun") and os.path.exists("/usr/bin/unshare"),
                     "crun is not installed")
class ContainerTests(DaemonTestCase):
    FLAGS = ("--stem-pool", "0", "--stop-grace-ms", "1000")
    BACKEND = "crun"

    @classmethod
    def prepare_daemon(cls):
        build_images()

    def deploy(self, spec, expect=202):
        r = self.daemon.request("POST", "/system/functions", spec)
        self.assertEqual(r.status, expect, r.body)
        return r

    def state_dir(self):
        return "/run/faasvisor/node-%d/%s" % (self.daemon.pid, self.BACKEND)

    def leftovers(self, instance_name):
        """Runtime state and bundle of one container that still exist (crun and runc keep
        root/<id>/, runsc root/<id>_sandbox:<id>.state and .lock)."""
        root = os.path.join(self.state_dir(), "root")
        found = [os.path.join(root, n) for n in sorted(os.listdir(root))
                 if n == instance_name or n.startswith(instance_name + "_sandbox:")]
        bundle = os.path.join(self.state_dir(), "bundles", instance_name)
        return found + ([bundle] if os.path.exists(bundle) else [])

    def test_cold_then_warm(self):
        name = self.BACKEND + "-echo"
        self.deploy(container_spec(name, "echo", self.BACKEND))
        cold = self.daemon.invoke(name, b"first")
        self.assertEqual((cold.status, cold.body), (200, b"first"))
        warm = self.daemon.invoke(name, b"second")
        self.assertEqual((warm.status, warm.body), (200, b"second"))
        insts = self.daemon.instances(name)
        self.assertEqual(len(insts), 1, insts)
        self.assertEqual(insts[0]["state"], "warm")

    def test_hash_in_container(self):
        name = self.BACKEND + "-hash"
        self.deploy(container_spec(name, "hash", self.BACKEND))
        r = self.daemon.invoke(name, b"abc", query="rounds=1")
        self.assertEqual(r.status, 200, r.body)
        self.assertIn(b"ba7816bf", r.body)  # SHA-256("abc")

    def test_twenty_concurrent_cold_starts(self):
        name = self.BACKEND + "-many"
        self.deploy(container_spec(name, "misbehave", self.BACKEND))
        results = parallel(lambda i: self.daemon.invoke(name, b"%d" % i, query="mode=slow&ms=300"),
                           [(i,) for i in range(20)])
        for i, r in enumerate(results):
            self.assertNotIsInstance(r, BaseException)
            self.assertEqual((r.status, r.body), (200, b"%d" % i))
        self.assertEqual(len(self.daemon.instances(name)), 20)
        self.assertEqual(self.daemon.request("DELETE", "/system/functions",
                                             {"functionName": name}).status, 202)
        wait_until(lambda: not os.listdir(os.path.join(self.state_dir(), "bundles")) or
                   all(not n.startswith(name) for n in os.listdir(os.path.join(self.state_dir(), "bundles"))),
                   scaled(10), "the bundles of deleted instances to be removed")

    def test_crash_502_leaves_nothing(self):
        name = self.BACKEND + "-crash"
        self.deploy(container_spec(name, "misbehave", self.BACKEND))
        ok = self.daemon.invoke(name, b"x")
        self.assertEqual(ok.status, 200, ok.body)
        inst = self.daemon.instances(name)[0]
        pid = inst["pid"]
        self.daemon.record_children()
        instance_name = "%s-%d" % (name, inst["id"])
        running = self.leftovers(instance_name)
        self.assertIn(os.path.join(self.state_dir(), "bundles", instance_name), running)
        self.assertGreaterEqual(len(running), 2, running)  # and the runtime's state
        below = self.daemon.recorded_below(pid)
        if self.BACKEND != "gvisor":  # in gVisor the function runs inside the sandbox's kernel
            self.assertTrue(any(e["comm"] == "misbehave" for e in below.values()), below)
        cgroups = [d for e in below.values() for d in e["cgroups"]]
        self.assertTrue(any(d.endswith("/" + instance_name) for d in cgroups), cgroups)

        r = self.daemon.invoke(name, b"x", query="mode=crash")
        self.assertEqual(r.status, 502, r.body)
        self.daemon.assert_process_gone(pid)
        wait_until(lambda: not self.leftovers(instance_name), scaled(5),
                   "runtime state and bundle of %s to be removed" % instance_name)
        self.assertTrue(self.daemon.healthy())

    def test_kill_after_grace_leaves_nothing(self):
        """A function that ignores SIGTERM outlives the stop grace: the node kills the runtime
        (crun/runc: SIGKILL after the forwarded SIGTERM; runsc: SIGKILL at once) and cleanup
        removes the orphaned container with the runtime's delete, off the loop."""
        name = self.BACKEND + "-stubborn"
        self.deploy(container_spec(name, "isolation", self.BACKEND,
                                   annotations={"faasvisor.backend": self.BACKEND, "faasvisor.timeout": "1s"}))
        self.assertEqual(self.daemon.invoke(name, b"", query="mode=alloc&mib=1").status, 200)
        inst = self.daemon.instances(name)[0]
        instance_name = "%s-%d" % (name, inst["id"])
        self.daemon.record_children()
        r = self.daemon.invoke(name, b"", query="mode=ignoreterm")
        self.assertEqual(r.status, 504, r.body)
        self.daemon.assert_process_gone(inst["pid"])
        wait_until(lambda: not self.leftovers(instance_name), scaled(10),
                   "runtime state and bundle of %s to be removed" % instance_name)
        self.assertTrue(self.daemon.healthy())

    def test_image_without_mount_points_400(self):
        bare = os.path.join(IMAGES, "bare-test")
        os.makedirs(bare, exist_ok=True)
        try:
            r = self.daemon.request("POST", "/system/functions",
                                    {"service": "bare", "image": bare, "envProcess": "/echo",
                                     "annotations": {"faasvisor.backend": self.BACKEND}})
            self.assertEqual(r.status, 400, r.body)
            self.assertIn(b"image", r.body)
        finally:
            os.rmdir(bare)

    def test_relative_command_400(self):
        spec = container_spec(self.BACKEND + "-rel", "echo", self.BACKEND)
        spec["envProcess"] = "./echo"
        r = self.daemon.request("POST", "/system/functions", spec)
        self.assertEqual(r.status, 400, r.body)


@unittest.skipUnless(shutil.which("runc"), "runc is not installed")
class RuncContainerTests(ContainerTests):
    BACKEND = "runc"


@unittest.skipUnless(shutil.which("runsc"), "runsc (gVisor) is not installed")
class GvisorContainerTests(ContainerTests):
    BACKEND = "gvisor"

    def test_timeout_kills_the_sandbox(self):
        """runsc runs as pid 1 of its own pid namespace: the node's SIGKILL ends it, the
        kernel ends the sandbox and gofer with it, and cleanup removes the state runsc left."""
        name = "gvisor-hang"
        self.deploy(container_spec(name, "misbehave", "gvisor",
                                   annotations={"faasvisor.backend": "gvisor",
                                                "faasvisor.timeout": "1s"}))
        self.assertEqual(self.daemon.invoke(name, b"x").status, 200)
        inst = self.daemon.instances(name)[0]
        self.daemon.record_children()
        r = self.daemon.invoke(name, b"x", query="mode=hang")
        self.assertEqual(r.status, 504, r.body)
        self.daemon.assert_process_gone(inst["pid"])
        instance_name = "%s-%d" % (name, inst["id"])
        wait_until(lambda: not self.leftovers(instance_name), scaled(5),
                   "runtime state and bundle of %s to be removed" % instance_name)

