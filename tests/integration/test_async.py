"""Async invocations (POST /async-function/NAME, docs/async.md) against the real daemon, with
a callback receiver in the test (an http.server on 127.0.0.1): 202 and X-Call-Id, what the
function sees, the callback's headers and body, retries against a receiver that fails
first, drops after the last attempt, 429 beyond the queue, the concurrency limit leaving
room for sync traffic, and at-least-once across kill -9 and restart."""

import http.server
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import unittest

from harness import (Daemon, DaemonTestCase, MISBEHAVE_IMAGE, REQINFO_IMAGE, REQINFO_PROCESS,
                     RawReader, children_of, deploy_spec, scaled, wait_until)

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # a pyenv python3 does not see Debian's python3-prometheus-client
    sys.path.append("/usr/lib/python3/dist-packages")
    from prometheus_client.parser import text_string_to_metric_families

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
FAST_RETRY = ("--async-callback-backoff-ms", "50", "--async-callback-attempts", "3",
              "--async-callback-timeout-ms", str(int(scaled(5000))))


class Receiver:
    """A callback receiver: records every POST; the first `fail_first` get `fail_status`."""

    def __init__(self, fail_first=0, fail_status=503):
        self.calls = []
        self.lock = threading.Lock()
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.attempts = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.attempts += 1
                    failing = receiver.attempts <= receiver.fail_first
                    if not failing:
                        receiver.calls.append({"path": self.path, "headers": dict(self.headers.items()),
                                               "body": body, "at": time.monotonic()})
                self.send_response(receiver.fail_status if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path="/cb"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def wait_for(self, count, timeout=None):
        wait_until(lambda: len(self.calls) >= count, timeout or scaled(20),
                   "%d callbacks (have %d)" % (count, len(self.calls)))
        with self.lock:
            return list(self.calls)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def metric(daemon, name, function):
    text = daemon.get("/metrics").body.decode()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and s.labels.get("function_name") == function:
                return s.value
    return None


def deploy(daemon, name, annotations=None, **kw):
    spec = deploy_spec(name, **kw)
    spec.setdefault("annotations", {}).update(annotations or {})
    r = daemon.request("POST", "/system/functions", spec)
    assert r.status == 202, r


def async_call(daemon, name, body=b"", path="", query="", headers=None):
    target = "/async-function/%s%s%s" % (name, path, "?" + query if query else "")
    return daemon.request("POST", target, body, headers=headers or {})


class ReceiverTestCase(DaemonTestCase):
    """A shared daemon with fast callback retries, and a fresh receiver per test."""
    FLAGS = ("--stem-pool", "4") + FAST_RETRY

    def setUp(self):
        super().setUp()
        self.receiver = Receiver()

    def tearDown(self):
        self.receiver.close()
        super().tearDown()


class AsyncApiTests(ReceiverTestCase):

    @classmethod
    def prepare_daemon(cls):
        cls.daemon.deploy("echo")
        deploy(cls.daemon, "reqinfo", image=REQINFO_IMAGE, process=REQINFO_PROCESS)
        deploy(cls.daemon, "misbehave", image=MISBEHAVE_IMAGE, process="./misbehave")

    def test_accepted_call_gets_202_and_its_result_is_posted_to_the_callback(self):
        d = self.daemon
        r = async_call(d, "echo", b"hello async", path="/sub/path", query="a=1",
                       headers={"X-Callback-Url": self.receiver.url("/done?tag=x"),
                                "Content-Type": "text/plain"})
        self.assertEqual(r.status, 202, r)
        call_id = r.header("X-Call-Id")
        self.assertRegex(call_id or "", UUID)
        self.assertEqual(r.body, b"")
        [cb] = self.receiver.wait_for(1)
        self.assertEqual(cb["path"], "/done?tag=x")
        self.assertEqual(cb["body"], b"hello async")
        h = cb["headers"]
        self.assertEqual(h.get("X-Call-Id"), call_id)
        self.assertEqual(h.get("X-Function-Status"), "200")
        self.assertEqual(h.get("X-Function-Name"), "echo")
        self.assertRegex(h.get("X-Duration-Seconds", ""), r"^\d+\.\d{6}$")
        self.assertLess(float(h["X-Duration-Seconds"]), scaled(10))
        self.assertEqual(h.get("Content-Type"), "text/plain")  # the function's own header

    def test_the_function_sees_a_post_with_path_query_headers_and_the_call_id(self):
        d = self.daemon
        r = async_call(d, "reqinfo", b"x" * 1000, path="/a/b", query="q=1&set=X-From-Fn:yes",
                       headers={"X-Callback-Url": self.receiver.url(), "X-Custom": "kept"})
        self.assertEqual(r.status, 202, r)
        [cb] = self.receiver.wait_for(1)
        info = json.loads(cb["body"])
        self.assertEqual(info["method"], "POST")
        self.assertEqual(info["path"], "/a/b")
        self.assertEqual(info["query"], "q=1&set=X-From-Fn:yes")
        self.assertEqual(info["body_len"], 1000)
        seen = {k.lower(): v for k, v in info["headers"]}
        self.assertEqual(seen.get("x-call-id"), r.header("X-Call-Id"))
        self.assertEqual(seen.get("x-custom"), "kept")
        self.assertEqual(cb["headers"].get("X-From-Fn"), "yes")
        self.assertEqual(cb["headers"].get("Content-Type"), "application/json")

    def test_a_client_call_id_is_kept(self):
        r = async_call(self.daemon, "echo", b"mine", headers={"X-Callback-Url": self.receiver.url(),
                                                               "X-Call-Id": "order-42.retry:1"})
        self.assertEqual(r.status, 202, r)
        self.assertEqual(r.header("X-Call-Id"), "order-42.retry:1")
        [cb] = self.receiver.wait_for(1)
        self.assertEqual(cb["headers"].get("X-Call-Id"), "order-42.retry:1")

    def test_the_function_status_and_node_errors_reach_the_callback(self):
        d = self.daemon
        r = async_call(d, "misbehave", query="mode=status&code=418",
                       headers={"X-Callback-Url": self.receiver.url("/teapot")})
        self.assertEqual(r.status, 202, r)
        r = async_call(d, "misbehave", query="mode=crash",
                       headers={"X-Callback-Url": self.receiver.url("/crash")})
        self.assertEqual(r.status, 202, r)
        calls = {c["path"]: c for c in self.receiver.wait_for(2)}
        self.assertEqual(calls["/teapot"]["headers"]["X-Function-Status"], "418")
        crash = calls["/crash"]
        self.assertEqual(crash["headers"]["X-Function-Status"], "502")
        self.assertEqual(crash["headers"]["X-Function-Name"], "misbehave")
        self.assertIn("error", json.loads(crash["body"]))

    def test_a_call_without_a_callback_runs(self):
        d = self.daemon
        before = d.function("echo")["invocationCount"]
        r = async_call(d, "echo", b"fire and forget")
        self.assertEqual(r.status, 202, r)
        wait_until(lambda: d.function("echo")["invocationCount"] > before, scaled(10), "the call to run")
        wait_until(lambda: metric(d, "faasvisor_async_live", "echo") == 0, scaled(10), "the call to be done")

    def test_bad_requests_are_refused_with_a_json_error(self):
        d = self.daemon
        cases = [
            ("nosuch", {}, 404, "not found"),
            ("echo", {"X-Callback-Url": "https://127.0.0.1/cb"}, 400, "https is not supported"),
            ("echo", {"X-Callback-Url": "http://receiver.example/cb"}, 400, "does not resolve host names"),
            ("echo", {"X-Callback-Url": "ftp://127.0.0.1/"}, 400, "http://"),
            ("echo", {"X-Callback-Url": "http://127.0.0.1:99999/"}, 400, "out of range"),
            ("echo", {"X-Callback-Url": "http://127.0.0.1/" + "a" * 3000}, 400, "longer than"),
            ("echo", {"X-Call-Id": "x" * 200}, 400, "X-Call-Id"),
        ]
        for name, headers, status, says in cases:
            with self.subTest(name=name, headers=headers):
                r = async_call(d, name, b"x", headers=headers)
                self.assertEqual(r.status, status, r)
                self.assertIn(says, r.json()["error"])
        r = d.request("GET", "/async-function/echo")
        self.assertEqual(r.status, 405, r)
        self.assertEqual(r.header("Allow"), "POST")
        r = d.request("POST", "/async-function/")
        self.assertEqual(r.status, 404, r)

    def test_callbacks_are_retried_until_the_receiver_takes_them(self):
        d = self.daemon
        self.receiver.fail_first = 2
        retries_before = metric(d, "faasvisor_async_callback_retries_total", "echo")
        r = async_call(d, "echo", b"persist", headers={"X-Callback-Url": self.receiver.url()})
        self.assertEqual(r.status, 202, r)
        [cb] = self.receiver.wait_for(1)
        self.assertEqual(cb["body"], b"persist")
        self.assertEqual(self.receiver.attempts, 3)
        self.assertEqual(metric(d, "faasvisor_async_callback_retries_total", "echo") - retries_before, 2)

    def test_a_callback_that_never_succeeds_is_dropped_after_the_last_attempt(self):
        d = self.daemon
        self.receiver.fail_first = 1000
        dropped_before = metric(d, "faasvisor_async_callback_dropped_total", "echo")
        r = async_call(d, "echo", b"lost", headers={"X-Callback-Url": self.receiver.url()})
        self.assertEqual(r.status, 202, r)
        wait_until(lambda: metric(d, "faasvisor_async_callback_dropped_total", "echo") == dropped_before + 1,
                   scaled(10), "the callback to be dropped")
        self.assertEqual(self.receiver.attempts, 3)  # --async-callback-attempts 3
        self.assertIn("callback to %s dropped after 3 attempts" % self.receiver.url(), d.log_text(200))
        # Nobody listening at all: connection refused is a failure like a 5xx.
        self.receiver.close()
        r = async_call(d, "echo", b"lost", headers={"X-Callback-Url": self.receiver.url()})
        self.assertEqual(r.status, 202, r)
        wait_until(lambda: metric(d, "faasvisor_async_callback_dropped_total", "echo") == dropped_before + 2,
                   scaled(10), "the callback to a closed port to be dropped")
        self.assertIn("Connection refused", d.log_text(200))
        self.receiver = Receiver()  # for tearDown

    def test_a_4xx_from_the_receiver_is_not_retried(self):
        d = self.daemon
        self.receiver.fail_first = 1
        self.receiver.fail_status = 404
        r = async_call(d, "echo", b"once", headers={"X-Callback-Url": self.receiver.url()})
        self.assertEqual(r.status, 202, r)
        wait_until(lambda: metric(d, "faasvisor_async_live", "echo") == 0, scaled(10), "the call to be done")
        time.sleep(0.3)
        self.assertEqual(self.receiver.attempts, 1)


class AsyncLimitTests(ReceiverTestCase):
    def test_beyond_the_queue_limit_calls_get_429(self):
        d = self.daemon
        deploy(d, "slowq", image=MISBEHAVE_IMAGE, process="./misbehave", timeout="30s",
               annotations={"faasvisor.async_queue": "3", "faasvisor.async_concurrency": "1"})
        headers = {"X-Callback-Url": self.receiver.url()}
        for _ in range(3):
            r = async_call(d, "slowq", query="mode=slow&ms=%d" % int(scaled(400)), headers=headers)
            self.assertEqual(r.status, 202, r)
        r = async_call(d, "slowq", query="mode=slow&ms=1", headers=headers)
        self.assertEqual(r.status, 429, r)
        self.assertIn("queue limit 3", r.json()["error"])
        self.assertEqual(r.header("Retry-After"), "1")
        self.assertEqual(metric(d, "faasvisor_async_refused_total", "slowq"), 1)
        self.assertGreaterEqual(metric(d, "faasvisor_async_queue_depth", "slowq"), 1)
        self.receiver.wait_for(3, timeout=scaled(20))
        wait_until(lambda: metric(d, "faasvisor_async_live", "slowq") == 0, scaled(10), "the calls to be done")
        r = async_call(d, "slowq", query="mode=slow&ms=1", headers=headers)
        self.assertEqual(r.status, 202, r)
        self.receiver.wait_for(4)

    def test_async_calls_take_at_most_their_concurrency_and_leave_instances_for_sync_traffic(self):
        d = self.daemon
        deploy(d, "slowc", image=MISBEHAVE_IMAGE, process="./misbehave", timeout="30s", max_instances=4,
               annotations={"faasvisor.async_concurrency": "2"})
        ms = int(scaled(600))
        for _ in range(8):
            r = async_call(d, "slowc", query="mode=slow&ms=%d" % ms,
                           headers={"X-Callback-Url": self.receiver.url()})
            self.assertEqual(r.status, 202, r)
        most = 0
        started = time.monotonic()
        while len(self.receiver.calls) < 8 and time.monotonic() - started < scaled(30):
            most = max(most, metric(d, "faasvisor_async_running", "slowc"))
            # A sync call finds an instance beside the two async ones: it does not wait for
            # the async backlog (8 x 600 ms).
            t0 = time.monotonic()
            r = d.invoke("slowc", b"sync", query="mode=ok")
            self.assertEqual(r.status, 200, r)
            self.assertLess(time.monotonic() - t0, scaled(2.0))
            time.sleep(0.05)
        self.receiver.wait_for(8)
        self.assertEqual(most, 2)
        # Two at a time: eight calls of 600 ms take at least four rounds.
        calls = sorted(c["at"] for c in self.receiver.calls)
        self.assertGreater(calls[-1] - calls[0], 2.5 * ms / 1000.0)

    def test_a_body_over_the_limit_is_refused_as_for_sync_calls(self):
        d = self.daemon
        d.deploy("echo2")
        # Refused on the declared length, before the body is sent (as /function/ is).
        s = d.raw_socket()
        try:
            s.sendall(b"POST /async-function/echo2 HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                      % (6 * 1024 * 1024 + 1))
            r = RawReader(s).read_response()
        finally:
            s.close()
        self.assertEqual(r.status, 413, r)
        self.assertIn("error", r.json())
        # A large body within the limit goes through the journal and back intact.
        big = os.urandom(1 << 20)
        r = async_call(d, "echo2", big, headers={"X-Callback-Url": self.receiver.url()})
        self.assertEqual(r.status, 202, r)
        [cb] = self.receiver.wait_for(1)
        self.assertEqual(cb["body"], big)


class AsyncRestartTests(unittest.TestCase):
    """Acknowledged calls survive kill -9: the next node on the same state directory runs
    every call not yet done, and each reaches the callback at least once."""

    def setUp(self):
        self.state_dir = tempfile.mkdtemp(prefix="fv-async-state-")
        self.daemon = None
        self.receiver = Receiver()

    def tearDown(self):
        if self.daemon is not None and self.daemon.proc is not None:
            self.daemon.proc.kill()
            self.daemon.finish(timeout=scaled(10))
        self.receiver.close()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def start(self):
        self.daemon = Daemon("--state-dir", self.state_dir, "--stem-pool", "4", *FAST_RETRY).start()
        return self.daemon

    def stop_checked(self, d, function):
        """Stops a node that started with work (the replay) and checks it left nothing behind.
        Its descriptor baseline, taken at start, counted the instances that work booted: it is
        taken again with the function gone, so the leak check compares like with like."""
        d.request("DELETE", "/system/functions", {"functionName": function})
        wait_until(lambda: d.get("/system/info").json()["faasvisor"]["instances"] == 0, scaled(15),
                   "the replayed calls' instances to stop")
        d._take_baseline()
        # Sandboxes of the node killed with -9 exit on their own and are re-parented to this
        # process (the harness's subreaper): reap those zombies so they are not counted as
        # this node's leftovers (test_store checks what a killed node leaves).
        for pid, (comm, state, _start) in children_of(os.getpid()).items():
            if state == "Z" and comm.startswith("faasvisor") and pid != d.pid:
                os.waitpid(pid, 0)
        self.assertEqual(d.stop(), [])

    def test_every_acknowledged_call_calls_back_after_kill_9_and_restart(self):
        d = self.start()
        deploy(d, "slowr", image=MISBEHAVE_IMAGE, process="./misbehave", timeout="30s",
               annotations={"faasvisor.async_concurrency": "2"})
        accepted = []
        for i in range(30):
            r = async_call(d, "slowr", b"call %d" % i, query="mode=slow&ms=%d" % int(scaled(200)),
                           headers={"X-Callback-Url": self.receiver.url("/r%d" % i)})
            self.assertEqual(r.status, 202, r)
            accepted.append(r.header("X-Call-Id"))
        time.sleep(0.3)  # a few run, most wait
        d.proc.send_signal(signal.SIGKILL)
        d.finish(timeout=scaled(10))  # leftovers of a killed node are checked by its own tests
        called_before = {c["headers"]["X-Call-Id"] for c in self.receiver.calls}
        self.assertLess(len(called_before), 30, "the kill came too late to test anything")

        d = self.start()
        wait_until(lambda: d.get("/system/function/slowr").status == 200, scaled(10),
                   "the function to come back")
        # At least once: a call cut short by the kill may have called back already and
        # calls back again, so wait for every id, not for 30 callbacks.
        def ids():
            with self.receiver.lock:
                return {c["headers"]["X-Call-Id"] for c in self.receiver.calls}
        wait_until(lambda: ids() >= set(accepted), scaled(60),
                   "every accepted call to call back (missing %d)" % len(set(accepted) - ids()))
        calls = self.receiver.wait_for(30)
        self.assertEqual(ids(), set(accepted))
        for c in calls:
            self.assertEqual(c["headers"]["X-Function-Status"], "200")
            i = int(c["path"][2:])
            self.assertEqual(c["body"], b"call %d" % i)
        wait_until(lambda: metric(d, "faasvisor_async_live", "slowr") == 0, scaled(10), "all calls done")
        done = len(self.receiver.calls)
        self.stop_checked(d, "slowr")
        # Done calls are not run again by a third node, and the journal was compacted.
        d = self.start()
        time.sleep(0.5)
        self.assertEqual(len(self.receiver.calls), done)
        self.assertEqual(d.stop(), [])
        segments = [n for n in os.listdir(os.path.join(self.state_dir, "async")) if n.startswith("seg-")]
        self.assertLessEqual(len(segments), 2, segments)

    def test_calls_waiting_at_a_graceful_shutdown_run_after_the_restart(self):
        d = self.start()
        deploy(d, "slowg", image=MISBEHAVE_IMAGE, process="./misbehave", timeout="30s",
               annotations={"faasvisor.async_concurrency": "1"})
        for i in range(6):
            r = async_call(d, "slowg", b"g%d" % i, query="mode=slow&ms=%d" % int(scaled(300)),
                           headers={"X-Callback-Url": self.receiver.url("/g%d" % i)})
            self.assertEqual(r.status, 202, r)
        self.assertEqual(d.stop(settle=False), [])
        self.assertLess(len(self.receiver.calls), 6)
        d = self.start()
        want = {"/g%d" % i for i in range(6)}
        # A callback cut by the shutdown may have reached the receiver and comes again.
        wait_until(lambda: {c["path"] for c in list(self.receiver.calls)} >= want, scaled(30),
                   "every waiting call to call back after the restart")
        wait_until(lambda: metric(d, "faasvisor_async_live", "slowg") == 0, scaled(10), "all calls done")
        self.stop_checked(d, "slowg")


if __name__ == "__main__":
    unittest.main()
