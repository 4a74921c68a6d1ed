"""Graceful shutdown: in-flight invocations finish within the grace, hung ones are cut off
after it, the daemon exits 0 and leaves nothing behind. Each test owns its daemon."""

import os
import signal
import socket
import threading
import time
import unittest

from harness import (LIVE_DAEMONS, Daemon, MISBEHAVE_IMAGE, SLOWBOOT_IMAGE, SLOWBOOT_PROCESS,
                     children_of, parallel,
                     scaled, wait_until)


class ShutdownTests(unittest.TestCase):
    def setUp(self):
        self.daemon = None

    def tearDown(self):
        # A test that failed half-way must not leave its daemon running.
        if self.daemon is not None and self.daemon.proc is not None:
            self.daemon.proc.kill()
            self.daemon.finish(timeout=scaled(10))

    def start(self, *flags):
        self.daemon = Daemon(*flags).start()
        return self.daemon

    def assertClean(self, problems):
        if problems:
            self.fail("shutdown/leak check failed:\n  - %s\n--- daemon log tail ---\n%s"
                      % ("\n  - ".join(problems), self.daemon.log_text()))

    def assertRefusesConnections(self, port):
        def refused():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return False
            except (ConnectionRefusedError, ConnectionResetError):
                return True
        wait_until(refused, scaled(5), "the node to stop accepting connections")

    def test_sigterm_during_load_finishes_in_flight(self):
        grace_ms = int(scaled(10000))
        d = self.start("--shutdown-grace-ms", str(grace_ms), "--stem-pool", "4",
                       "--log-level", "debug")
        d.deploy("slow", image=MISBEHAVE_IMAGE, process="./misbehave", max_instances=20,
                 timeout="60s")
        n = 20
        outcome = {}

        def call(i):
            return d.invoke("slow", b"load %d" % i, query="mode=slow&ms=500", timeout=scaled(60))

        def run_all():
            outcome["results"] = parallel(call, [(i,) for i in range(n)], timeout=scaled(60))

        runner = threading.Thread(target=run_all)
        runner.start()
        # Every invocation has reached the node (counted) before the signal.
        wait_until(lambda: d.function("slow")["invocationCount"] == n, scaled(20),
                   "all %d invocations to arrive" % n)
        d.record_children()
        signalled = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        self.assertRefusesConnections(d.port)
        runner.join(grace_ms / 1000 + scaled(10))
        self.assertFalse(runner.is_alive(), "invocations not answered")
        answered_s = time.monotonic() - signalled
        results = outcome["results"]
        for i, r in enumerate(results):
            self.assertNotIsInstance(r, BaseException, "invocation %d; daemon log:\n%s"
                                     % (i, d.log_text()))
            self.assertEqual((r.status, r.body), (200, b"load %d" % i),
                             "%r; daemon log:\n%s" % (r, d.log_text()))
        self.assertLess(answered_s, grace_ms / 1000, "answers came after the grace period")
        self.assertClean(d.finish(timeout=scaled(20)))
        self.assertEqual(d.exit_code, 0)

    def test_sigterm_while_cold_starting(self):
        # The invocation waits for an instance that is still booting (slowboot sleeps before
        # READY) when the signal arrives: it is in flight, so it must be served by that
        # instance once ready, not left queued until the grace runs out.
        grace_ms = int(scaled(8000))
        d = self.start("--shutdown-grace-ms", str(grace_ms), "--stem-pool", "2",
                       "--log-level", "debug")
        d.deploy("pyboot", image=SLOWBOOT_IMAGE, process=SLOWBOOT_PROCESS, memory="128Mi",
                 env={"FV_BOOT_DELAY_MS": str(int(scaled(1000)))})
        got = []

        def call():
            try:
                got.append(d.invoke("pyboot", b"in flight", timeout=scaled(30)))
            except Exception as e:  # noqa: BLE001 - reported below
                got.append(e)

        t = threading.Thread(target=call)
        t.start()
        wait_until(lambda: d.stats("pyboot")["instances"]["booting"] == 1
                   and d.stats("pyboot")["invocations"]["queued"] == 1, scaled(10),
                   "the invocation to wait for a booting instance")
        d.record_children()
        signalled = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        t.join(scaled(40))
        self.assertFalse(t.is_alive(), "never answered")
        took = time.monotonic() - signalled
        self.assertEqual(len(got), 1)
        r = got[0]
        self.assertNotIsInstance(r, BaseException, "daemon log:\n%s" % d.log_text())
        self.assertEqual((r.status, r.body), (200, b"in flight"),
                         "%r after %.1fs; daemon log:\n%s" % (r, took, d.log_text()))
        self.assertLess(took, grace_ms / 1000 / 2, "answered only when the grace ran out")
        self.assertClean(d.finish(timeout=scaled(20)))
        self.assertEqual(d.exit_code, 0)

    def test_second_signal_during_drain(self):
        # A second SIGTERM/SIGINT while draining changes nothing: in-flight work finishes.
        d = self.start("--shutdown-grace-ms", str(int(scaled(10000))), "--stem-pool", "4")
        d.deploy("slow2", image=MISBEHAVE_IMAGE, process="./misbehave", max_instances=4,
                 timeout="60s")
        self.assertEqual(d.scale("slow2", 4).status, 202)
        d.wait_warm("slow2", 4)
        outcome = {}

        def run_all():
            outcome["r"] = parallel(lambda i: d.invoke("slow2", b"%d" % i, query="mode=slow&ms=600",
                                                       timeout=scaled(30)),
                                    [(i,) for i in range(4)], timeout=scaled(40))

        runner = threading.Thread(target=run_all)
        runner.start()
        wait_until(lambda: d.stats("slow2")["instances"]["busy"] == 4, scaled(10), "all busy")
        d.record_children()
        d.proc.send_signal(signal.SIGTERM)
        d.proc.send_signal(signal.SIGINT)
        d.proc.send_signal(signal.SIGTERM)
        runner.join(scaled(40))
        for i, r in enumerate(outcome["r"]):
            self.assertNotIsInstance(r, BaseException)
            self.assertEqual((r.status, r.body), (200, b"%d" % i), r)
        self.assertClean(d.finish(timeout=scaled(20)))
        self.assertEqual(d.exit_code, 0)

    def test_sigterm_hung_invocation_past_grace(self):
        grace_ms = 500
        d = self.start("--shutdown-grace-ms", str(grace_ms), "--stop-grace-ms", "500",
                       "--stem-pool", "2")
        d.deploy("hung", image=MISBEHAVE_IMAGE, process="./misbehave", max_instances=2,
                 timeout="120s")
        got = []
        t = threading.Thread(target=lambda: got.append(
            d.invoke("hung", b"forever", query="mode=hang", timeout=scaled(60))))
        t.start()
        wait_until(lambda: d.stats("hung")["instances"]["busy"] == 1, scaled(10),
                   "the hung invocation to start")
        d.instances("hung")  # records the instance pid for the leak check
        d.record_children()
        signalled = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        t.join(scaled(30))
        self.assertFalse(t.is_alive(), "the hung invocation was never answered")
        r = got[0]
        self.assertEqual(r.status, 503, r)
        self.assertIn("error", r.json())
        self.assertClean(d.finish(timeout=scaled(20)))
        self.assertEqual(d.exit_code, 0)
        took = time.monotonic() - signalled
        self.assertGreaterEqual(took, grace_ms / 1000 * 0.9, "did not wait for the grace period")
        self.assertLess(took, scaled(10), "shutdown took far longer than the grace period")

    def test_sigint_with_warm_and_idle_instances(self):
        d = self.start("--stem-pool", "3")
        d.deploy("idle", max_instances=4)
        self.assertEqual(d.scale("idle", 4).status, 202)
        d.wait_warm("idle", 4)
        d.deploy("never-invoked")
        d.record_children()
        self.assertClean(d.stop(sig=signal.SIGINT, settle=False, timeout=scaled(20)))
        self.assertEqual(d.exit_code, 0)

    def test_sigterm_with_queued_and_failing_boot(self):
        # Invocations queued for an instance that never becomes ready when the signal
        # arrives. No new instance may start during the drain, so they cannot all be
        # served, but each must get a JSON 5xx (not a dropped connection).
        d = self.start("--shutdown-grace-ms", str(int(scaled(1500))), "--stop-grace-ms", "300",
                       "--stem-pool", "2")
        d.deploy("noready", image=MISBEHAVE_IMAGE, process="./misbehave", max_instances=1,
                 env={"FV_TEST_NO_READY": "1"}, boot_timeout="%dms" % int(scaled(300)),
                 timeout="60s")
        got = []

        def call():
            try:
                got.append(d.invoke("noready", b"q", timeout=scaled(30)))
            except Exception as e:  # noqa: BLE001 - reported below
                got.append(e)

        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
        wait_until(lambda: d.function("noready")["invocationCount"] == 3, scaled(10),
                   "the invocations to queue")
        d.record_children()
        d.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(scaled(30))
        self.assertEqual(len(got), 3)
        for r in got:
            self.assertNotIsInstance(r, BaseException, "daemon log:\n%s" % d.log_text())
            self.assertIn(r.status, (502, 503), r)
            self.assertIn("error", r.json())
        self.assertClean(d.finish(timeout=scaled(20)))

    def test_sigterm_immediately_after_start(self):
        d = self.start()
        self.assertClean(d.stop(settle=False, timeout=scaled(20)))
        self.assertEqual(d.exit_code, 0)


def reap_late_orphans():
    """A SIGKILLed daemon's sandboxes die in steps (the supervisor, then, by its death
    signal, the sandbox's init), so some reach us, the subreaper, after the leak check has
    looked. Reap them here, so the next test's check does not count this test's kill."""
    deadline = time.monotonic() + scaled(5)
    while time.monotonic() < deadline:
        strays = [pid for pid, (comm, _, _) in children_of(os.getpid()).items()
                  if comm.startswith("faasvisor") and pid not in LIVE_DAEMONS]
        for pid in strays:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        if not strays:
            time.sleep(0.2)  # one more look for a straggler
            if not [p for p, (c, _, _) in children_of(os.getpid()).items()
                    if c.startswith("faasvisor") and p not in LIVE_DAEMONS]:
                return


class LeakCheckerSelfTest(unittest.TestCase):
    """The leak checks must not be vacuous: a daemon killed with SIGKILL leaves its cgroups
    (and, for a moment, its children) behind, and the checker has to notice."""

    def test_killed_daemon_is_reported(self):
        d = Daemon("--stem-pool", "2").start()
        try:
            d.deploy("victim")
            self.assertEqual(d.invoke("victim", b"x").status, 200)
            d.record_children()
            self.assertGreaterEqual(len(d.seen), 3, "sampler recorded no processes: %r" % d.seen)
            self.assertTrue(any(e["cgroups"] for e in d.seen.values()), "no cgroups recorded")
            d.proc.kill()
            problems = d.finish(timeout=scaled(10))
        finally:
            if d.proc is not None:
                d.proc.kill()
                d.finish(timeout=scaled(10))
            reap_late_orphans()
        text = "\n".join(problems)
        self.assertIn("exited with -9", text)
        self.assertIn("cgroup root", text)



class BrokenSandboxTests(unittest.TestCase):
    """A sandbox helper (--stem) that dies before it can start the function. Cold starts
    fail cleanly with the helper's last words, and the dead sandboxes are reaped: none is
    left as a zombie when the daemon exits (the subreaper check in the harness sees them)."""

    def test_sandbox_failing_before_exec(self):
        # A sandbox helper that fails before the function runs: every boot fails with its
        # last words, nothing waits forever, and nothing is left behind.
        hidden = "/tmp/fvtest-broken-stem-%d" % os.getpid()
        with open(hidden, "w") as f:
            f.write("#!/bin/sh\necho \"broken sandbox $0\" >&2\nexit 3\n")
        os.chmod(hidden, 0o755)
        d = None
        try:
            d = Daemon("--stem", hidden, "--stem-pool", "2").start()
            d.deploy("nostem")
            r = d.invoke("nostem", b"x", timeout=scaled(30))
            self.assertEqual(r.status, 502, r)
            error = r.json()["error"]
            self.assertIn("start", error)
            self.assertIn(hidden, error, "the reason (the sandbox's last words) is missing")
            self.assertNotIn("waitid", error, "the failed sandbox could not be reaped")
            self.assertTrue(d.healthy())
            d.record_children()
            problems = d.stop(settle=False, timeout=scaled(20))
            if problems:
                self.fail("shutdown/leak check failed:\n  - %s\n--- daemon log tail ---\n%s"
                          % ("\n  - ".join(problems), d.log_text()))
        finally:
            if d is not None and d.proc is not None:
                d.proc.kill()
                d.finish(timeout=scaled(10))
            os.unlink(hidden)
