"""tools/evaluate against a real daemon: a small quick run over every backend this host runs
(process, the container backends, the microVM and the unikernel), checked in its CSV, figures and report; an interrupted
run resumed without losing or repeating finished runs; and the figures the node reports
for it (each instance's initialisation time and memory, each invocation's duration)."""

import csv
import os
import shutil
import signal
import subprocess
import tempfile
import time

from harness import BUILD, ROOT, DaemonTestCase, scaled, wait_until

EVALUATE = os.path.join(ROOT, "tools", "evaluate")
IMAGE_BUILD = os.environ.get("FAASVISOR_IMAGE_BUILD", BUILD)
VM_DIR = os.path.join(IMAGE_BUILD, "vm")
UNIKERNEL = os.path.join(IMAGE_BUILD, "unikernel", "echo.uk")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("fig5_1_memory.png", "fig5_2a_init.png", "fig5_2b_cold.png", "fig5_2c_warm.png",
           "fig5_2d_gap.png", "fig5_3_artefact.png")


def rootfs(name):
    return os.path.join(IMAGE_BUILD, "images", name, "rootfs")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class EvaluateTests(DaemonTestCase):
    FLAGS = ("--memory-sample-ms", "200", "--vm-kernel", os.path.join(VM_DIR, "vmlinux"))
    backends = ["process"]

    @classmethod
    def setUpClass(cls):
        # The microVM kernel must exist before the daemon starts (it looks for it then).
        if shutil.which("qemu-system-x86_64"):
            subprocess.run([os.path.join(ROOT, "tools", "vmkernel"), "--build", IMAGE_BUILD], check=True,
                           stdout=subprocess.DEVNULL)
        super().setUpClass()

    @classmethod
    def prepare_daemon(cls):
        d = cls.daemon
        d.deploy("echo")
        info = d.get("/system/info").json()["faasvisor"]
        available = {b["name"] for b in info["backends"] if b["available"]}
        cls.backends = ["process"]
        if not os.path.exists(os.path.join(rootfs("echo"), "echo")):
            subprocess.run([os.path.join(ROOT, "tools", "mkimage"), IMAGE_BUILD], check=True,
                           stdout=subprocess.DEVNULL)
        for backend in ("crun", "gvisor"):
            if backend in available:
                r = d.request("POST", "/system/functions", {
                    "service": "echo-" + backend, "image": rootfs("echo"), "envProcess": "/echo",
                    "limits": {"memory": "64Mi"}, "annotations": {"faasvisor.backend": backend}})
                assert r.status == 202, r
                cls.backends.append(backend)
        vms = {"microvm": (os.path.join(VM_DIR, "echo.initramfs"), "128Mi"), "unikernel": (UNIKERNEL, "8Mi")}
        for backend, (image, memory) in vms.items():
            if backend in available and os.path.exists(image):
                r = d.request("POST", "/system/functions", {
                    "service": "echo-" + backend, "image": image, "envProcess": "/echo",
                    "limits": {"memory": memory}, "annotations": {"faasvisor.backend": backend}})
                assert r.status == 202, r
                cls.backends.append(backend)

    def setUp(self):
        super().setUp()
        self.out = tempfile.mkdtemp(prefix="fv-evaluate-")
        self.addCleanup(shutil.rmtree, self.out, True)

    def url(self):
        return "http://127.0.0.1:%d" % self.daemon.port

    def evaluate(self, *args, timeout=120):
        return subprocess.run([EVALUATE, "--url", self.url(), "--out", self.out] + list(args),
                              capture_output=True, text=True, timeout=scaled(timeout))

    def assertNoEvalFunctions(self):
        names = [f["name"] for f in self.daemon.get("/system/functions").json()]
        self.assertFalse([n for n in names if n.startswith("eval-")], names)

    def test_quick_run_writes_samples_figures_and_report(self):
        if shutil.which("qemu-system-x86_64"):  # tools/setup installs QEMU: both VM backends are measured
            self.assertIn("microvm", self.backends)
            self.assertIn("unikernel", self.backends)
        # n = 1 and 3, about 3 samples a point: 3 cold and 3 warm runs at n = 1, one of each at 3.
        r = self.evaluate("--quick", "--backends", ",".join(self.backends), "--points", "1,3",
                          "--samples", "3")
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        self.assertIn("left ~", r.stderr)  # progress with the time left
        for b in self.backends:
            self.assertIn("] %s cold  n=3" % b, r.stderr)
        samples = read_csv(os.path.join(self.out, "samples.csv"))
        runs = read_csv(os.path.join(self.out, "runs.csv"))
        for b in self.backends:
            mine = [s for s in samples if s["backend"] == b]
            for s in mine:
                self.assertGreater(float(s["value"]), 0, s)
            for phase in ("cold", "warm"):
                for n in (1, 3):
                    execs = [s for s in mine if s["phase"] == phase and int(s["concurrency"]) == n
                             and s["metric"] == "exec_ms"]
                    self.assertEqual(len(execs), 3, (b, phase, n, execs))
                    self.assertTrue(all(s["status"] == "200" for s in execs), execs)
                    client = [s for s in mine if s["phase"] == phase and int(s["concurrency"]) == n
                              and s["metric"] == "client_ms"]
                    self.assertEqual(len(client), 3)
                    self.assertEqual(len({s["repeat"] for s in execs}), 3 if n == 1 else 1)
                    if phase == "cold":
                        inits = [s for s in mine if s["phase"] == "cold" and s["metric"] == "init_ms"
                                 and int(s["concurrency"]) == n]
                        # every instance of a cold run booted in it: at least one per run
                        self.assertGreaterEqual(len(inits), 3 if n == 1 else 1, (b, n, inits))
                        self.assertEqual({s["start"] for s in execs} - {"cold", "warm"}, set())
                        self.assertIn("cold", {s["start"] for s in execs})
                    else:
                        self.assertEqual({s["start"] for s in execs}, {"warm"}, execs)
            for metric in ("memory_bytes", "rss_bytes", "pss_bytes"):
                at3 = [s for s in mine if s["metric"] == metric and s["concurrency"] == "3"]
                self.assertEqual(len(at3), 3, (b, metric, at3))
            art = [s for s in mine if s["metric"] == "artefact_bytes"]
            self.assertEqual(len(art), 1, art)
            # the image's size on disk: a unikernel is tens of KiB, anything holding the
            # static echo executable hundreds
            image = UNIKERNEL if b == "unikernel" else None
            if image:
                self.assertEqual(int(art[0]["value"]), os.path.getsize(image))
            else:
                self.assertGreater(int(art[0]["value"]), 100 * 1024)
        self.assertEqual(len(runs), len(self.backends) * (1 + 2 * 3 + 2 * 1))
        for name in FIGURES:
            with open(os.path.join(self.out, name), "rb") as f:
                self.assertEqual(f.read(8), PNG_MAGIC, name)
        with open(os.path.join(self.out, "report.md")) as f:
            report = f.read()
        self.assertIn("| accelerator |", report)
        for b in self.backends:
            self.assertIn("| %s | 1 |" % b, report)
            self.assertIn("| %s | 3 |" % b, report)
        for name in FIGURES:
            self.assertIn("(%s)" % name, report)
        summary = read_csv(os.path.join(self.out, "summary.csv"))
        self.assertTrue(any(s["metric"] == "exec_ms" and s["phase"] == "cold" for s in summary))
        self.assertNoEvalFunctions()

    def test_interrupted_run_resumes_without_losing_or_repeating_runs(self):
        args = ["--backends", "process", "--points", "1,2", "--samples", "10", "--min-repeats", "1"]
        planned = 1 + 2 * 10 + 2 * 5
        p = subprocess.Popen([EVALUATE, "--url", self.url(), "--out", self.out] + args,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = 0
        deadline = time.monotonic() + scaled(60)
        while seen < 12 and time.monotonic() < deadline:
            line = p.stderr.readline()
            if not line:
                break
            seen += "] process " in line
        # SIGTERM rather than SIGINT: a test runner started in the background inherits an
        # ignored SIGINT, and Python then leaves it ignored. The evaluator treats both alike.
        p.send_signal(signal.SIGTERM)
        _out, err = p.communicate(timeout=scaled(60))
        self.assertEqual(p.returncode, 130, err[-2000:])
        self.assertIn("run the same command to resume", err)
        kept = read_csv(os.path.join(self.out, "runs.csv"))
        self.assertGreaterEqual(len(kept), 10)
        self.assertLess(len(kept), planned)
        self.assertNoEvalFunctions()
        # A line cut by an interruption mid-write is dropped, not mixed in.
        with open(os.path.join(self.out, "samples.csv"), "a") as f:
            f.write("process,cold,1,0,exec_ms")

        r = self.evaluate(*args)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        self.assertIn("resuming: %d of %d runs" % (len(kept), planned), r.stderr)
        runs = read_csv(os.path.join(self.out, "runs.csv"))
        keys = [(x["phase"], x["concurrency"], x["repeat"]) for x in runs]
        self.assertEqual(len(keys), planned)
        self.assertEqual(len(set(keys)), planned)
        self.assertEqual(keys[:len(kept)], [(x["phase"], x["concurrency"], x["repeat"]) for x in kept])
        samples = read_csv(os.path.join(self.out, "samples.csv"))
        for phase, n, rep in keys:
            if phase == "static":
                continue
            execs = [s for s in samples if (s["phase"], s["concurrency"], s["repeat"]) == (phase, n, rep)
                     and s["metric"] == "exec_ms"]
            self.assertEqual(len(execs), int(n), (phase, n, rep))
        # Other settings in the same directory are refused rather than mixed in.
        r = self.evaluate("--backends", "process", "--points", "1,4")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("another evaluation", r.stderr)

    def test_bad_arguments_are_refused(self):
        for args, words in ((["--points", "0"], "points"), (["--points", "x"], "points"),
                            (["--function", "nobackend"], "BACKEND=NAME"),
                            (["--backends", "nosuch"], "no such backend")):
            r = self.evaluate(*args, timeout=30)
            self.assertNotEqual(r.returncode, 0, args)
            self.assertIn(words, r.stderr, (args, r.stderr))
        r = subprocess.run([EVALUATE, "--url", "http://127.0.0.1:1", "--out", self.out],
                           capture_output=True, text=True, timeout=scaled(30))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("Connection refused", r.stderr)

    def test_node_reports_instance_and_invocation_figures(self):
        d = self.daemon
        d.deploy("figures")
        r = d.invoke("figures", b"x")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("X-Faasvisor-Start"), "cold")
        cold_s = float(r.header("X-Duration-Seconds"))
        r = d.invoke("figures", b"y")
        self.assertEqual(r.header("X-Faasvisor-Start"), "warm")
        warm_s = float(r.header("X-Duration-Seconds"))
        self.assertGreater(cold_s, 0)
        self.assertGreater(warm_s, 0)
        self.assertLess(cold_s, 30)
        info = d.get("/system/info").json()["faasvisor"]
        self.assertEqual(info["memory_sample_ms"], 200)
        inst = d.instances("figures")[0]
        self.assertGreater(inst["initMs"], 0)
        # the invocation that waited for the boot took at least the boot
        self.assertGreaterEqual(cold_s * 1e3 + 0.001, inst["initMs"])
        wait_until(lambda: d.instances("figures")[0]["memoryBytes"] > 0, scaled(5),
                   "the instance's memory to be sampled")
        stats = d.stats("figures")
        self.assertEqual(stats["init_ms"]["count"], 1)
        self.assertAlmostEqual(stats["init_ms"]["mean"], inst["initMs"], delta=0.01)
        # a booting instance has no initMs yet
        d.deploy("figures-slow", image=os.path.join(ROOT, "tests", "integration", "functions", "slowboot"),
                 process="/usr/bin/python3 -B ../../../../runtimes/python/faasvisor_runtime.py handler",
                 env={"FV_BOOT_DELAY_MS": "1500"}, memory="128Mi")
        d.scale("figures-slow", 1)
        booting = wait_until(lambda: d.instances("figures-slow"), scaled(5), "an instance")
        self.assertEqual(booting[0]["state"], "booting")
        self.assertNotIn("initMs", booting[0])
        d.request("DELETE", "/system/functions", {"functionName": "figures-slow"})
        d.request("DELETE", "/system/functions", {"functionName": "figures"})
