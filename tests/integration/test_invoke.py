"""Invocations: cold and warm starts, concurrency, pre-booting, bodies, headers, runtimes."""

import hashlib
import os
import threading

from harness import (DaemonTestCase, HASH_IMAGE, MISBEHAVE_IMAGE, PYECHO_IMAGE, PYECHO_PROCESS,
                     REQINFO_IMAGE, REQINFO_PROCESS, RawReader, parallel, raw_request, scaled,
                     wait_until)


class InvokeTests(DaemonTestCase):
    FLAGS = ("--log-level", "info")

    def test_cold_then_warm(self):
        d = self.daemon
        d.deploy("cw-echo")
        first = d.invoke("cw-echo", b"one")
        self.assertEqual(first.status, 200, first)
        self.assertEqual(first.body, b"one")
        self.assertEqual(first.header("X-Faasvisor-Start"), "cold")
        instance = first.header("X-Faasvisor-Instance")
        self.assertTrue(instance and instance.isdigit(), first)
        second = d.invoke("cw-echo", b"two")
        self.assertEqual(second.status, 200, second)
        self.assertEqual(second.body, b"two")
        self.assertEqual(second.header("X-Faasvisor-Start"), "warm")
        self.assertEqual(second.header("X-Faasvisor-Instance"), instance)

        stats = d.stats("cw-echo")
        self.assertEqual(stats["invocations"]["cold"], 1, stats)
        self.assertEqual(stats["invocations"]["warm"], 1, stats)
        self.assertEqual(stats["invocations"]["errors"], 0, stats)
        self.assertEqual(stats["exec_ms"]["cold"]["count"], 1, stats)
        self.assertEqual(stats["exec_ms"]["warm"]["count"], 1, stats)
        self.assertEqual(stats["init_ms"]["count"], 1, stats)
        self.assertEqual(stats["instances"]["warm"], 1, stats)
        for key in ("count", "mean", "stddev", "p50", "p95", "p99", "max"):
            self.assertIn(key, stats["init_ms"])

        info = d.function("cw-echo")
        self.assertEqual(info["name"], "cw-echo")
        self.assertEqual(info["invocationCount"], 2)
        self.assertEqual(info["replicas"], 1)
        self.assertEqual(info["availableReplicas"], 1)
        insts = info["faasvisor"]["instances"]
        self.assertEqual(len(insts), 1)
        self.assertEqual(str(insts[0]["id"]), instance)
        self.assertEqual(insts[0]["served"], 2)
        self.assertGreater(insts[0]["pid"], 0)

    def test_60_concurrent_from_zero(self):
        d = self.daemon
        d.deploy("conc-echo", max_instances=100)
        bodies = [("request %d " % i).encode() * (i + 1) for i in range(60)]
        results = parallel(lambda b: d.invoke("conc-echo", b, timeout=scaled(60)),
                           [(b,) for b in bodies], timeout=scaled(90))
        errors = [r for r in results if isinstance(r, BaseException)]
        self.assertEqual(errors, [], "client errors")
        for body, r in zip(bodies, results):
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, body)
            self.assertIn(r.header("X-Faasvisor-Start"), ("cold", "warm"))
        stats = d.stats("conc-echo")
        inv = stats["invocations"]
        self.assertEqual(inv["cold"] + inv["warm"], 60, stats)
        self.assertEqual(inv["errors"], 0, stats)
        cold_headers = sum(1 for r in results if r.header("X-Faasvisor-Start") == "cold")
        self.assertEqual(cold_headers, inv["cold"], stats)
        # A cold invocation waited for its instance's boot: no instance serves two of them.
        cold_ids = [r.header("X-Faasvisor-Instance") for r in results
                    if r.header("X-Faasvisor-Start") == "cold"]
        self.assertEqual(len(cold_ids), len(set(cold_ids)), "an instance served two cold starts")
        instances = {r.header("X-Faasvisor-Instance") for r in results}
        self.assertGreaterEqual(len(instances), inv["cold"])
        self.assertLessEqual(len(d.instances("conc-echo")), 60, "more instances than invocations")
        self.assertEqual(d.function("conc-echo")["invocationCount"], 60)

    def test_preboot_then_all_warm(self):
        d = self.daemon
        d.deploy("pre-echo", max_instances=30)
        r = d.scale("pre-echo", 20)
        self.assertEqual(r.status, 202, r)
        d.wait_warm("pre-echo", 20, timeout=scaled(30))
        info = d.function("pre-echo")
        self.assertEqual(info["replicas"], 20)
        self.assertEqual(info["availableReplicas"], 20)
        booted = {i["id"] for i in info["faasvisor"]["instances"]}
        bodies = [("warm %d" % i).encode() for i in range(20)]
        results = parallel(lambda b: d.invoke("pre-echo", b), [(b,) for b in bodies])
        for body, res in zip(bodies, results):
            self.assertNotIsInstance(res, BaseException)
            self.assertEqual(res.status, 200, res)
            self.assertEqual(res.body, body)
            self.assertEqual(res.header("X-Faasvisor-Start"), "warm", res)
            self.assertIn(int(res.header("X-Faasvisor-Instance")), booted)
        stats = d.stats("pre-echo")
        self.assertEqual(stats["invocations"]["cold"], 0, stats)
        self.assertEqual(stats["invocations"]["warm"], 20, stats)
        self.assertEqual(stats["init_ms"]["count"], 20, stats)
        # No extra instances were started for the burst.
        self.assertEqual(len(d.instances("pre-echo")), 20)

    def test_scale_is_capped_by_max_instances(self):
        d = self.daemon
        d.deploy("cap-echo", max_instances=2)
        self.assertEqual(d.scale("cap-echo", 5).status, 202)
        d.wait_warm("cap-echo", 2)
        self.assertEqual(len(d.instances("cap-echo")), 2)

    def test_one_mib_body_round_trip(self):
        d = self.daemon
        d.deploy("big-echo")
        body = os.urandom(1 << 20)
        r = d.invoke("big-echo", body, headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(r.status, 200, r.status)
        self.assertEqual(len(r.body), len(body))
        self.assertTrue(r.body == body, "1 MiB body came back altered")
        self.assertEqual(r.header("Content-Type"), "application/octet-stream")
        # And again warm, on the same instance with its grown buffers.
        body2 = os.urandom((1 << 20) + 17)
        r2 = d.invoke("big-echo", body2)
        self.assertEqual(r2.status, 200)
        self.assertEqual(r2.header("X-Faasvisor-Start"), "warm")
        self.assertTrue(r2.body == body2)
        self.assertEqual(d.invoke("big-echo", b"small").body, b"small")

    def test_empty_body_and_get(self):
        d = self.daemon
        d.deploy("empty-echo")
        r = d.invoke("empty-echo", method="GET")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"")

    def test_hash(self):
        d = self.daemon
        d.deploy("hash", image=HASH_IMAGE, process="./hash")
        body = b"hash me"
        digest = hashlib.sha256(body).digest()
        for _ in range(9):
            digest = hashlib.sha256(digest).digest()
        r = d.invoke("hash", body, query="rounds=10")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, digest.hex().encode() + b"\n")
        bad = d.invoke("hash", body, query="rounds=0")
        self.assertEqual(bad.status, 400, bad)

    def test_pyecho(self):
        d = self.daemon
        d.deploy("pyecho", image=PYECHO_IMAGE, process=PYECHO_PROCESS, memory="128Mi")
        r = d.invoke("pyecho", b"from python", headers={"Content-Type": "text/x-py"},
                     timeout=scaled(30))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"from python")
        self.assertEqual(r.header("Content-Type"), "text/x-py")
        self.assertEqual(r.header("X-Faasvisor-Start"), "cold")
        binary = bytes(range(256)) * 64
        r2 = d.invoke("pyecho", binary)
        self.assertEqual(r2.status, 200, r2)
        self.assertEqual(r2.header("X-Faasvisor-Start"), "warm")
        self.assertTrue(r2.body == binary)

    def test_headers_pass_through_both_ways(self):
        d = self.daemon
        d.deploy("hdr", image=MISBEHAVE_IMAGE, process="./misbehave")
        r = d.invoke("hdr", b"payload", query="mode=headers",
                     headers={"Content-Type": "text/x-in", "X-Custom": "abc"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("X-Test"), "yes", r)
        self.assertEqual(r.body, b"payload")
        # echo sends the request's Content-Type back: the request header reached the function.
        d.deploy("hdr-echo")
        r = d.invoke("hdr-echo", b"x", headers={"Content-Type": "text/x-roundtrip"})
        self.assertEqual(r.header("Content-Type"), "text/x-roundtrip", r)

    def test_request_reaches_function_intact(self):
        d = self.daemon
        d.deploy("reqinfo", image=REQINFO_IMAGE, process=REQINFO_PROCESS, memory="128Mi",
                 env={"GREETING": "hello"})
        r = d.invoke("reqinfo", b"0123456789", method="PUT", path="/a/b%20c/",
                     query="x=1&y=two&x=3",
                     headers={"X-Custom": "abc", "X-Empty": "", "Content-Type": "text/plain"},
                     timeout=scaled(30))
        self.assertEqual(r.status, 200, r)
        info = r.json()
        self.assertEqual(info["method"], "PUT")
        self.assertEqual(info["path"], "/a/b%20c/")
        self.assertEqual(info["query"], "x=1&y=two&x=3")
        self.assertEqual(info["body_len"], 10)
        headers = [(k.lower(), v) for k, v in info["headers"]]
        self.assertIn(("x-custom", "abc"), headers)
        self.assertIn(("x-empty", ""), headers)
        self.assertIn(("content-type", "text/plain"), headers)
        self.assertNotIn("connection", [k for k, _ in headers], "hop-by-hop header passed on")
        self.assertEqual(info["function"], "reqinfo")
        self.assertEqual(info["instance"], "reqinfo-" + r.header("X-Faasvisor-Instance"))
        self.assertEqual(info["greeting"], "hello")
        # No sub-path: the function sees "/"; other methods work too.
        r = d.invoke("reqinfo", method="GET")
        self.assertEqual((r.json()["method"], r.json()["path"], r.json()["query"]), ("GET", "/", ""))
        r = d.invoke("reqinfo", method="DELETE", path="/x")
        self.assertEqual((r.json()["method"], r.json()["path"]), ("DELETE", "/x"))

    def test_response_headers_pass_and_framing_ones_do_not(self):
        d = self.daemon
        d.deploy("resphdr", image=REQINFO_IMAGE, process=REQINFO_PROCESS, memory="128Mi")
        s = d.raw_socket()
        try:
            reader = RawReader(s)
            query = "set=X-One:1&set=X-Two:two%20words&set=Content-Length:999" \
                    "&set=Connection:close&set=Transfer-Encoding:chunked"
            s.sendall(raw_request("POST", "/function/resphdr?" + query, b"abc"))
            r = reader.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("X-One"), "1")
            self.assertEqual(r.header("X-Two"), "two words")
            self.assertEqual(r.header("Content-Type"), "application/json")
            names = [k.lower() for k, _ in r.header_list]
            self.assertEqual(names.count("content-length"), 1, r.header_list)
            self.assertNotIn("transfer-encoding", names)
            self.assertNotEqual(r.header("Connection"), "close", "the function closed our connection")
            self.assertEqual(r.json()["body_len"], 3)
            # The connection is still usable: framing came from the node, not the function.
            s.sendall(raw_request("GET", "/healthz"))
            self.assertEqual(reader.read_response().status, 200)
        finally:
            s.close()

    def test_status_passes_through(self):
        d = self.daemon
        d.deploy("status", image=MISBEHAVE_IMAGE, process="./misbehave")
        for code in (201, 404, 418, 500):
            r = d.invoke("status", query="mode=status&code=%d" % code)
            self.assertEqual(r.status, code, r)
        r = d.invoke("status", query="mode=nonsense")
        self.assertEqual(r.status, 400, r)
        # A 5xx from the function itself is an answer, not a broken instance.
        self.assertEqual(len(d.instances("status")), 1)

    def test_subpath_and_query_reach_function(self):
        d = self.daemon
        d.deploy("path-echo")
        r = d.invoke("path-echo", b"x", path="/a/b", query="k=v&z=1")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"x")

    def test_unknown_function_404(self):
        d = self.daemon
        r = d.invoke("no-such-function", b"x")
        self.assertJsonError(r, 404, "no-such-function")

    def test_stats_reset(self):
        d = self.daemon
        d.deploy("reset-echo")
        for _ in range(3):
            self.assertEqual(d.invoke("reset-echo", b"x").status, 200)
        before = d.stats("reset-echo")
        self.assertEqual(before["invocations"]["cold"] + before["invocations"]["warm"], 3)
        r = d.request("DELETE", "/system/stats")
        self.assertEqual(r.status, 200, r)
        after = d.stats("reset-echo")
        self.assertEqual(after["invocations"], {"cold": 0, "warm": 0, "errors": 0, "queued": 0})
        self.assertEqual(after["init_ms"]["count"], 0)
        self.assertEqual(after["exec_ms"]["cold"]["count"], 0)
        self.assertEqual(after["exec_ms"]["warm"]["count"], 0)
        # Instance gauges are live state, not counters: the warm instance is still there.
        self.assertEqual(after["instances"]["warm"], 1, after)
        self.assertEqual(d.invoke("reset-echo", b"y").header("X-Faasvisor-Start"), "warm")
        self.assertEqual(d.stats("reset-echo")["invocations"]["warm"], 1)

    def test_queue_limit_429(self):
        d = self.daemon
        d.deploy("q-slow", image=MISBEHAVE_IMAGE, process="./misbehave", max_instances=1, queue=1,
                 timeout="30s")
        self.assertEqual(d.scale("q-slow", 1).status, 202)
        d.wait_warm("q-slow", 1)
        # One running (slow), one queued behind it; the third overflows the queue of 1.
        results = []
        ms = int(scaled(1500))

        def slow(tag):
            results.append(d.invoke("q-slow", tag, query="mode=slow&ms=%d" % ms))

        first = threading.Thread(target=slow, args=(b"first",))
        first.start()
        wait_until(lambda: d.stats("q-slow")["instances"]["busy"] == 1, scaled(10),
                   "the slow invocation to occupy the only instance")
        second = threading.Thread(target=slow, args=(b"second",))
        second.start()
        wait_until(lambda: d.stats("q-slow")["invocations"]["queued"] == 1, scaled(10),
                   "one invocation to wait in the queue")
        r = d.invoke("q-slow", b"overflow")
        self.assertJsonError(r, 429, "queue")
        self.assertEqual(r.header("Retry-After"), "1")
        for w in (first, second):
            w.join(scaled(30))
        self.assertEqual(sorted((x.status, x.body) for x in results),
                         [(200, b"first"), (200, b"second")])
        self.assertGreaterEqual(d.stats("q-slow")["invocations"]["errors"], 1)
