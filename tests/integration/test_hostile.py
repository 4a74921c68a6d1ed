"""Hostile and sloppy clients: pipelining without reading, slow heads and bodies, the fd
limit, requests RFC 9112 says to refuse, 100 Continue, and bad /system/logs queries."""

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from buildinfo import is_sanitized

from harness import (DAEMON, REQINFO_IMAGE, REQINFO_PROCESS, DaemonTestCase, RawReader, deploy_spec,
                     raw_request, scaled)

HEADER_MS = int(scaled(1500))
BODY_MS = int(scaled(2500))
IDLE_MS = int(scaled(60000))  # long: the deadlines, not the idle timeout, must fire


class HostileClientTests(DaemonTestCase):
    FLAGS = ("--stem-pool", "2", "--header-timeout-ms", str(HEADER_MS),
             "--body-timeout-ms", str(BODY_MS), "--idle-timeout-ms", str(IDLE_MS))

    @classmethod
    def prepare_daemon(cls):
        cls.daemon.deploy("echo")

    def rss_kib(self):
        with open("/proc/%d/status" % self.daemon.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def test_pipelining_client_that_never_reads_is_not_read_without_bound(self):
        # Each request is answered with a body as big as its own: without a cap the node reads
        # every request and queues every response for a client that never takes them.
        body = b"x" * 16384
        request = raw_request("POST", "/function/echo", body)
        budget = 48 << 20
        s = self.daemon.raw_socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sent = [0]
        rss_before = self.rss_kib()

        def push():
            s.settimeout(scaled(3))
            try:
                while sent[0] < budget:
                    s.sendall(request)
                    sent[0] += len(request)
            except (socket.timeout, OSError):
                pass

        t = threading.Thread(target=push, daemon=True)
        t.start()
        t.join(scaled(60))
        growth_mib = (self.rss_kib() - rss_before) / 1024
        s.close()
        # The node stops reading once ~1 MiB of answers wait; the kernel's socket buffers
        # (a few MiB on loopback) take the rest before the client blocks.
        self.assertLess(sent[0], 24 << 20, "the node read %d MiB from a client that never reads"
                        % (sent[0] >> 20))
        self.assertLess(growth_mib, 24, "node RSS grew %.0f MiB" % growth_mib)
        self.assertTrue(self.daemon.healthy())

    def slow_send(self, head, trickle, deadline_ms):
        """Sends head, then one byte of `trickle` every 200 ms; the 408 must come in time."""
        s = self.daemon.raw_socket()
        start = time.monotonic()
        try:
            s.sendall(head)
            reader = RawReader(s)
            s.setblocking(False)
            for b in trickle:
                try:
                    s.send(bytes([b]))
                except OSError:
                    break
                time.sleep(0.2)
                try:
                    reader.buf += s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    break
                if b"\r\n\r\n" in reader.buf:
                    break
                if time.monotonic() - start > deadline_ms / 1000 + scaled(5):
                    break
            s.setblocking(True)
            s.settimeout(scaled(10))
            r = reader.read_response()
            return r, (time.monotonic() - start) * 1000
        finally:
            s.close()

    def test_slow_headers_get_408_at_the_header_deadline(self):
        # One byte every 200 ms keeps the idle timer from ever firing.
        r, ms = self.slow_send(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ", b"a" * 1000, HEADER_MS)
        self.assertJsonError(r, 408, "header timeout")
        self.assertLess(ms, HEADER_MS + scaled(2000))
        self.assertGreaterEqual(ms, HEADER_MS * 0.9)

    def test_slow_body_gets_408_at_the_body_deadline(self):
        r, ms = self.slow_send(b"POST /function/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n",
                               b"b" * 1000, BODY_MS)
        self.assertJsonError(r, 408, "body timeout")
        self.assertLess(ms, BODY_MS + scaled(2000))

    def test_a_normal_request_is_not_cut_by_the_deadlines(self):
        s = self.daemon.raw_socket()
        try:
            reader = RawReader(s)
            for _ in range(3):  # keep-alive: each request has deadlines of its own
                s.sendall(raw_request("POST", "/function/echo", b"fine"))
                r = reader.read_response()
                self.assertEqual((r.status, r.body), (200, b"fine"))
                time.sleep(HEADER_MS / 1000 * 0.7)
        finally:
            s.close()

    def exchange(self, data):
        s = self.daemon.raw_socket()
        try:
            s.sendall(data)
            return RawReader(s).read_response()
        finally:
            s.close()

    def test_rfc9112_refusals(self):
        for data, needle in ((b"GET /healthz\r\n\r\n", "no HTTP version"),
                             (b"GET /healthz HTTP/1.1\r\n\r\n", "missing Host"),
                             (b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "more than one Host"),
                             (b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n b\r\n\r\n", "obs-fold")):
            with self.subTest(data=data):
                r = self.exchange(data)
                self.assertJsonError(r, 400, needle)
        r = self.exchange(b"GET /healthz HTTP/1.0\r\n\r\n")
        self.assertEqual(r.status, 200)

    def test_expect_100_continue_comes_before_the_body_is_sent(self):
        body = b"z" * (2 << 20)
        s = self.daemon.raw_socket()
        try:
            s.sendall(b"POST /function/echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body))
            s.settimeout(scaled(0.5))  # curl waits 1 s for it before sending anyway
            interim = s.recv(64)
            self.assertEqual(interim, b"HTTP/1.1 100 Continue\r\n\r\n")
            s.settimeout(scaled(30))
            s.sendall(body)
            r = RawReader(s).read_response()
            self.assertEqual((r.status, len(r.body)), (200, len(body)))
        finally:
            s.close()

    def test_log_tail_must_be_a_whole_number(self):
        for tail in ("-1", "18446744073709551617", "1e3", "+5", "99999999999"):
            with self.subTest(tail=tail):
                r = self.daemon.get("/system/logs?name=echo&tail=" + tail)
                self.assertJsonError(r, 400, "'tail'")
        self.assertEqual(self.daemon.get("/system/logs?name=echo&tail=0").status, 200)


class EnvironmentLimitTests(DaemonTestCase):
    """envVars up to the documented limit (256 variables, 64 KiB of NAME=value) reach the
    function, although its start message is then more than a pipe holds; beyond, 400."""

    FLAGS = ("--stem-pool", "2")

    def big_env(self, total_bytes, count=16):
        per = total_bytes // count - len("BIG00=")
        env = {"BIG%02d" % i: chr(ord("a") + i % 26) * per for i in range(count)}
        env["GREETING"] = "still here"
        return env

    def test_an_environment_bigger_than_a_pipe_reaches_the_function(self):
        d = self.daemon
        env = self.big_env(63 * 1024)
        self.assertGreater(sum(len(k) + 1 + len(v) for k, v in env.items()), 62 * 1024)
        d.deploy("bigenv", image=REQINFO_IMAGE, process=REQINFO_PROCESS, env=env)
        for _ in range(2):  # cold, then a second cold start on a fresh sandbox
            r = d.invoke("bigenv", b"x")
            self.assertEqual(r.status, 200, r)
            info = r.json()
            self.assertEqual(info["greeting"], "still here")
            self.assertEqual(info["function"], "bigenv")  # written after envVars: all of it arrived
            d.scale("bigenv", 0)

    def test_environment_limits_are_400(self):
        d = self.daemon
        for name, env, needle in (("too-big", self.big_env(65 * 1024), "bytes"),
                                  ("too-many", {"V%d" % i: "1" for i in range(257)}, "variables")):
            with self.subTest(name=name):
                r = d.request("POST", "/system/functions", deploy_spec(name, env=env))
                self.assertJsonError(r, 400, ["'envVars'", needle])
        r = d.request("POST", "/system/functions", deploy_spec("long-cmd", process="./echo " + "a" * 17000))
        self.assertJsonError(r, 400, "'envProcess'")
        d.deploy("at-limit", env={"V%d" % i: "1" for i in range(256)})


class FdLimitTests(unittest.TestCase):
    """At a descriptor limit too low for the node's own set-up it refuses to start with the
    reason; a little higher it runs, and neither a failing accept (io_uring takes the
    descriptor before it looks for a connection) nor anything else spins the loop."""

    @unittest.skipIf(is_sanitized(DAEMON), "the sanitizer runtime needs descriptors of its own (UBSan's vptr "
                     "check opens a pipe to probe memory): at these limits it reports false errors "
                     "('object has invalid vptr', 'memory cannot be printed'); the release build runs this test")
    def test_low_fd_limits_never_spin_and_sigterm_works(self):
        outcomes = []
        state = tempfile.mkdtemp(prefix="faasvisor-fdlimit-")
        self.addCleanup(shutil.rmtree, state, True)
        # The durable store's start-up (its directory, the records it reads) and the async
        # journal's segment need a few descriptors more than the listener and the ring: the
        # limits tried reach past them (about 17 to 20).
        for limit in list(range(5, 13)) + [16, 20, 24]:
            p = subprocess.Popen(["prlimit", "--nofile=%d:%d" % (limit, limit), DAEMON,
                                  "--listen", "127.0.0.1:0", "--accel=tcg", "--stem-pool", "0",
                                  "--state-dir", state],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(scaled(1.5))
            if p.poll() is None:
                with open("/proc/%d/stat" % p.pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                ticks = int(fields[11]) + int(fields[12])
                p.terminate()
                try:
                    code = p.wait(scaled(5))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                    code = "ignored SIGTERM"
                err = p.stderr.read()
                outcomes.append((limit, "ran", ticks, code))
                # A spinning loop burns the whole 1.5 s (150 ticks); an idle one nearly none.
                self.assertLess(ticks, 40, "fd limit %d: %d ticks in 1.5 s: the loop spins\n%s"
                                % (limit, ticks, err[-2000:]))
                self.assertEqual(code, 0, "fd limit %d: %s" % (limit, err[-2000:]))
                self.assertLess(err.count("\n"), 20, "fd limit %d: the log floods:\n%s" % (limit, err[-2000:]))
            else:
                err = p.stderr.read()
                outcomes.append((limit, "refused", p.returncode))
                self.assertNotEqual(p.returncode, 0)
                self.assertLess(p.returncode, 128, "fd limit %d: crashed\n%s" % (limit, err))
                self.assertIn("faasvisord:", err)
                self.assertNotIn("Bad file descriptor", err, "fd limit %d: the reason is lost" % limit)
        self.assertTrue(any(o[1] == "ran" for o in outcomes), outcomes)


if __name__ == "__main__":
    unittest.main()
