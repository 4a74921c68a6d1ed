"""What a function can see and do from inside its sandbox, per backend (process, crun, runc,
gvisor), checked by a function written for it (tests/functions/isolation.c): no host
processes, a read-only root and a private writable /tmp, no network beyond loopback, no
capabilities, no new privileges, a seccomp filter (the containers' profile, or the process
backend's variant of it), a function directory under /tmp that shows no neighbour, and a memory
hog stopped by its limit (the invocation gets 502, the node lives on, nothing leaks: the
class's teardown checks processes, descriptors and cgroups).
"""

import json
import os
import shutil
import tempfile
import unittest

from harness import BUILD, MISBEHAVE_IMAGE, DaemonTestCase
from test_containers import build_images, rootfs


def sanitizer_build():
    """A sanitizer build's process sandbox allows ptrace (LeakSanitizer needs it)."""
    try:
        with open(os.path.join(BUILD, "src", "faasvisor-stem"), "rb") as f:
            data = f.read()
    except OSError:
        return False
    return b"__asan_init" in data or b"AddressSanitizer" in data


def host_pid_count():
    return sum(1 for n in os.listdir("/proc") if n.isdigit())


class ProcessIsolationTests(DaemonTestCase):
    BACKEND = "process"
    FLAGS = ("--stop-grace-ms", "1000")

    @classmethod
    def prepare_daemon(cls):
        if cls.BACKEND != "process":
            build_images()

    def spec(self, name, memory=None):
        if self.BACKEND == "process":
            spec = {"service": name, "image": MISBEHAVE_IMAGE, "envProcess": "./isolation"}
        else:
            spec = {"service": name, "image": rootfs("isolation"), "envProcess": "/isolation",
                    "annotations": {"faasvisor.backend": self.BACKEND}}
        if memory:
            spec["limits"] = {"memory": memory}
        return spec

    def deploy(self, spec):
        r = self.daemon.request("POST", "/system/functions", spec)
        self.assertEqual(r.status, 202, r.body)

    def report(self):
        """The function's report (deployed by the first test that asks)."""
        name = self.BACKEND + "-iso"
        if self.daemon.request("GET", "/system/function/" + name).status == 404:
            self.deploy(self.spec(name))
        r = self.daemon.invoke(name, b"", query="mode=report")
        self.assertEqual(r.status, 200, r.body)
        return json.loads(r.body)

    def test_sees_no_host_process(self):
        rep = self.report()
        # Its own pid namespace: the function, and at most its sandbox's init.
        self.assertGreaterEqual(rep["pids"], 1, rep)
        self.assertLessEqual(rep["pids"], 2, rep)
        self.assertGreater(host_pid_count(), 10)  # so the check above means something

    def test_cannot_write_its_root_but_its_tmp(self):
        rep = self.report()
        # gVisor checks permissions before the read-only mount: nobody gets EACCES there.
        self.assertIn(rep["root_write"], ("EROFS", "EACCES") if self.BACKEND == "gvisor" else ("EROFS",), rep)
        self.assertEqual(rep["tmp_write"], "ok", rep)
        self.assertEqual(rep["uid"], 65534, rep)

    def test_no_network_beyond_loopback(self):
        rep = self.report()
        self.assertEqual(rep["interfaces"], ["lo"], rep)
        self.assertIn(rep["connect"], ("ENETUNREACH", "EHOSTUNREACH"), rep)

    def test_no_privileges(self):
        rep = self.report()
        self.assertEqual(int(rep["cap_eff"], 16), 0, rep)
        self.assertEqual(int(rep["cap_bnd"], 16), 0, rep)
        if self.BACKEND != "gvisor":  # gVisor's /proc has no NoNewPrivs line
            self.assertEqual(rep["no_new_privs"], 1, rep)

    def test_seccomp_filter(self):
        rep = self.report()
        self.assertEqual(rep["seccomp"], 2, rep)  # SECCOMP_MODE_FILTER
        if not (self.BACKEND == "process" and sanitizer_build()):
            self.assertEqual(rep["ptrace_me"], "EPERM", rep)
        self.assertEqual(rep["unshare_user"], "EPERM", rep)
        for probe in ("mount", "bpf", "io_uring_setup", "clone_newns"):
            self.assertNotEqual(rep[probe], "ok", (probe, rep))
        if self.BACKEND == "process":
            # The process variant's exact answers (docs/security.md).
            for probe in ("mount", "bpf", "io_uring_setup", "clone_newns"):
                self.assertEqual(rep[probe], "EPERM", (probe, rep))

    def test_function_directory_under_tmp_shows_no_neighbour(self):
        if self.BACKEND != "process":
            self.skipTest("only a process sandbox binds a host directory back")
        parent = tempfile.mkdtemp(prefix="fv-iso-neighbours-", dir="/tmp")
        try:
            fn_dir = os.path.join(parent, "fn")
            os.makedirs(fn_dir)
            shutil.copy2(os.path.join(MISBEHAVE_IMAGE, "isolation"), fn_dir)
            for neighbour in ("other-function", "node.log"):
                with open(os.path.join(parent, neighbour), "w") as f:
                    f.write("not for the function\n")
            os.chmod(parent, 0o755)
            self.deploy({"service": "tmp-iso", "image": fn_dir, "envProcess": "./isolation"})
            r = self.daemon.invoke("tmp-iso", b"", query="mode=report")
            self.assertEqual(r.status, 200, r.body)
            rep = json.loads(r.body)
            self.assertEqual(rep["parent_entries"], ["fn"], rep)
            self.assertEqual(rep["root_write"], "EROFS", rep)
        finally:
            shutil.rmtree(parent, ignore_errors=True)

    def test_memory_hog_is_stopped_by_its_limit(self):
        name = self.BACKEND + "-hog"
        self.deploy(self.spec(name, memory="32Mi"))
        small = self.daemon.invoke(name, b"", query="mode=alloc&mib=4")
        self.assertEqual((small.status, small.body), (200, b"allocated 4 MiB"))
        pid = self.daemon.instances(name)[0]["pid"]
        self.daemon.record_children()
        hog = self.daemon.invoke(name, b"", query="mode=alloc&mib=200")
        self.assertEqual(hog.status, 502, hog.body)
        self.daemon.assert_process_gone(pid)
        self.assertTrue(self.daemon.healthy())
        again = self.daemon.invoke(name, b"", query="mode=alloc&mib=4")
        self.assertEqual((again.status, again.body), (200, b"allocated 4 MiB"))


@unittest.skipUnless(shutil.which("crun") and os.path.exists("/usr/bin/unshare"), "crun is not installed")
class CrunIsolationTests(ProcessIsolationTests):
    BACKEND = "crun"
    FLAGS = ("--stem-pool", "0", "--stop-grace-ms", "1000")



@unittest.skipUnless(shutil.which("runc"), "runc is not installed")
class RuncIsolationTests(CrunIsolationTests):
    BACKEND = "runc"


@unittest.skipUnless(shutil.which("runsc"), "runsc (gVisor) is not installed")
class GvisorIsolationTests(CrunIsolationTests):
    BACKEND = "gvisor"
