"""The management API: deploy validation, duplicates, update, delete, scale, listing."""

import os
import threading

from harness import (DaemonTestCase, ECHO_IMAGE, MISBEHAVE_IMAGE, SLOWBOOT_IMAGE,
                     SLOWBOOT_PROCESS, deploy_spec, parallel, process_alive, raw_request, scaled,
                     wait_until)


class ApiTests(DaemonTestCase):
    FLAGS = ("--stem-pool", "4")

    def post(self, body):
        return self.daemon.request("POST", "/system/functions", body)

    def test_bad_json_400(self):
        for body in (b"{", b"not json", b"", b"[1,2", b'{"service": "x",}'):
            with self.subTest(body=body):
                self.assertJsonError(self.post(body), 400)
        self.assertJsonError(self.post(b"[]"), 400)
        self.assertJsonError(self.post(b'"string"'), 400)

    def test_missing_fields_400_name_the_field(self):
        full = deploy_spec("valid-name")
        for field in ("service", "image", "envProcess"):
            with self.subTest(missing=field):
                spec = dict(full)
                del spec[field]
                self.assertJsonError(self.post(spec), 400, "'%s'" % field)

    def test_bad_field_values_400_name_the_field(self):
        cases = [
            ("service", {"service": 42}),
            ("service", {"service": ""}),
            ("service", {"service": "bad/name"}),
            ("service", {"service": "x" * 64}),
            ("image", {"image": "relative/dir"}),
            ("image", {"image": "/var/tmp/no/such/directory/for/faasvisor"}),
            ("image", {"image": os.path.join(ECHO_IMAGE, "echo")}),  # a file, not a directory
            ("envProcess", {"envProcess": ""}),
            ("envProcess", {"envProcess": "'unterminated"}),
            ("envVars", {"envVars": ["A=1"]}),
            ("envVars", {"envVars": {"A": 1}}),
            ("envVars", {"envVars": {"A=B": "1"}}),
            ("labels.com.openfaas.scale.max", {"labels": {"com.openfaas.scale.max": "0"}}),
            ("labels.com.openfaas.scale.max", {"labels": {"com.openfaas.scale.max": "many"}}),
            ("limits.memory", {"limits": {"memory": "lots"}}),
            ("limits.memory", {"limits": {"memory": "1Ki"}}),
            ("limits.cpu", {"limits": {"cpu": "fast"}}),
            ("annotations.faasvisor.timeout", {"annotations": {"faasvisor.timeout": "soon"}}),
            ("annotations.faasvisor.timeout", {"annotations": {"faasvisor.timeout": "0s"}}),
            ("annotations.faasvisor.boot_timeout", {"annotations": {"faasvisor.boot_timeout": "-1s"}}),
            ("annotations.faasvisor.queue", {"annotations": {"faasvisor.queue": "x"}}),
            ("annotations.faasvisor.backend", {"annotations": {"faasvisor.backend": "nonesuch"}}),
        ]
        for field, override in cases:
            with self.subTest(field=field, value=override):
                spec = deploy_spec("valid-name")
                spec.update(override)
                self.assertJsonError(self.post(spec), 400, "'%s'" % field)
        # None of them was deployed.
        self.assertIsNone(self.daemon.function("valid-name"))

    def test_duplicate_409(self):
        d = self.daemon
        d.deploy("dup")
        self.assertJsonError(self.post(deploy_spec("dup")), 409, "dup")
        names = [f["name"] for f in d.get("/system/functions").json()]
        self.assertEqual(names.count("dup"), 1)

    def test_list_and_get(self):
        d = self.daemon
        d.deploy("listed", env={"GREETING": "hi"}, memory="64Mi", cpu="500m", max_instances=7,
                 timeout="3s")
        r = d.get("/system/functions")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("Content-Type"), "application/json")
        listed = {f["name"]: f for f in r.json()}
        self.assertIn("listed", listed)
        f = d.function("listed")
        self.assertEqual(f, listed["listed"])
        self.assertEqual(f["image"], ECHO_IMAGE)
        self.assertEqual(f["envProcess"], "./echo")
        self.assertEqual(f["envVars"], {"GREETING": "hi"})
        self.assertEqual(f["limits"], {"memory": "64Mi", "cpu": "500m"})
        self.assertEqual(f["labels"], {"com.openfaas.scale.max": "7"})
        self.assertEqual(f["replicas"], 0)
        self.assertEqual(f["availableReplicas"], 0)
        self.assertEqual(f["invocationCount"], 0)
        self.assertEqual(f["faasvisor"]["instances"], [])
        self.assertEqual(f["faasvisor"]["generation"], 1)
        self.assertEqual(f["faasvisor"]["maxInstances"], 7)
        self.assertEqual(f["faasvisor"]["timeoutMs"], 3000)
        self.assertJsonError(d.get("/system/function/not-deployed"), 404)

    def test_put_unknown_404(self):
        r = self.daemon.request("PUT", "/system/functions", deploy_spec("never-deployed"))
        self.assertJsonError(r, 404, "never-deployed")

    def test_put_validates_400(self):
        d = self.daemon
        d.deploy("put-bad")
        spec = deploy_spec("put-bad")
        spec["image"] = "/var/tmp/no/such/dir"
        self.assertJsonError(d.request("PUT", "/system/functions", spec), 400, "'image'")
        self.assertEqual(d.function("put-bad")["faasvisor"]["generation"], 1)

    def test_put_update_retires_old_instances(self):
        d = self.daemon
        d.deploy("upd", image=MISBEHAVE_IMAGE, process="./misbehave", max_instances=4)
        r = d.invoke("upd", b"v1")
        self.assertEqual(r.status, 200, r)
        old_id = int(r.header("X-Faasvisor-Instance"))
        old_pid = d.instance_pid("upd", old_id)
        self.assertIsNotNone(old_pid)
        self.assertEqual(d.function("upd")["faasvisor"]["generation"], 1)

        r = d.deploy("upd", image=ECHO_IMAGE, process="./echo", max_instances=4, method="PUT")
        self.assertEqual(r.status, 202)
        info = d.function("upd")
        self.assertEqual(info["faasvisor"]["generation"], 2)
        self.assertEqual(info["image"], ECHO_IMAGE)
        self.assertEqual(info["envProcess"], "./echo")
        # The warm instance of generation 1 retires: its process and cgroups go away.
        d.assert_process_gone(old_pid)
        wait_until(lambda: all(i["id"] != old_id for i in d.instances("upd")), scaled(10),
                   "the old instance to leave the function's list")
        # New invocations run the new definition on a new instance: echo ignores ?mode.
        r = d.invoke("upd", b"v2", query="mode=status&code=299")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"v2")
        self.assertEqual(r.header("X-Faasvisor-Start"), "cold")
        self.assertNotEqual(int(r.header("X-Faasvisor-Instance")), old_id)

    def test_put_update_while_busy_retires_after(self):
        d = self.daemon
        d.deploy("upd-busy", image=MISBEHAVE_IMAGE, process="./misbehave", max_instances=2,
                 timeout="30s")
        got = []
        ms = int(scaled(800))
        t = threading.Thread(target=lambda: got.append(
            d.invoke("upd-busy", b"slow", query="mode=slow&ms=%d" % ms)))
        t.start()
        wait_until(lambda: d.stats("upd-busy")["instances"]["busy"] == 1, scaled(10),
                   "the slow invocation to start")
        busy_pid = d.instances("upd-busy")[0]["pid"]
        d.deploy("upd-busy", image=MISBEHAVE_IMAGE, process="./misbehave", max_instances=2,
                 timeout="30s", env={"V": "2"}, method="PUT")
        t.join(scaled(30))
        self.assertEqual(got[0].status, 200, got)
        self.assertEqual(got[0].body, b"slow")
        # The busy instance finished its invocation under the old definition, then retired.
        d.assert_process_gone(busy_pid)
        r = d.invoke("upd-busy", b"next")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("X-Faasvisor-Start"), "cold")

    def test_delete_stops_instances(self):
        d = self.daemon
        d.deploy("del", max_instances=3)
        self.assertEqual(d.scale("del", 3).status, 202)
        d.wait_warm("del", 3)
        pids = [i["pid"] for i in d.instances("del")]
        self.assertEqual(len(pids), 3)
        r = d.request("DELETE", "/system/functions", {"functionName": "del"})
        self.assertEqual(r.status, 202, r)
        self.assertIsNone(d.function("del"))
        for pid in pids:
            d.assert_process_gone(pid)
        self.assertJsonError(d.invoke("del", b"x"), 404)
        self.assertJsonError(d.request("DELETE", "/system/functions", {"functionName": "del"}), 404)
        self.assertNotIn("del", d.stats()["functions"])
        # The name can be used again.
        d.deploy("del")
        self.assertEqual(d.invoke("del", b"again").body, b"again")

    def test_delete_bad_body_400(self):
        d = self.daemon
        self.assertJsonError(d.request("DELETE", "/system/functions", b"{"), 400)
        self.assertJsonError(d.request("DELETE", "/system/functions", {"name": "x"}), 400,
                             "'functionName'")

    def test_scale_to_zero_stops_idle(self):
        d = self.daemon
        d.deploy("scale0", max_instances=5)
        self.assertEqual(d.scale("scale0", 2).status, 202)
        d.wait_warm("scale0", 2)
        pids = [i["pid"] for i in d.instances("scale0")]
        self.assertEqual(d.scale("scale0", 0).status, 202)
        for pid in pids:
            d.assert_process_gone(pid)
        wait_until(lambda: d.instances("scale0") == [], scaled(10), "no instances left")
        info = d.function("scale0")
        self.assertEqual(info["replicas"], 0)
        # Still deployed: the next invocation is a cold start.
        r = d.invoke("scale0", b"back")
        self.assertEqual((r.status, r.body, r.header("X-Faasvisor-Start")), (200, b"back", "cold"))

    def test_scale_down_keeps_busy(self):
        d = self.daemon
        d.deploy("scale-busy", image=MISBEHAVE_IMAGE, process="./misbehave", max_instances=2,
                 timeout="30s")
        got = []
        ms = int(scaled(800))
        t = threading.Thread(target=lambda: got.append(
            d.invoke("scale-busy", b"b", query="mode=slow&ms=%d" % ms)))
        t.start()
        wait_until(lambda: d.stats("scale-busy")["instances"]["busy"] == 1, scaled(10),
                   "the invocation to start")
        self.assertEqual(d.scale("scale-busy", 0).status, 202)
        t.join(scaled(30))
        self.assertEqual(got[0].status, 200, got)

    def test_scale_errors(self):
        d = self.daemon
        d.deploy("scale-err")
        path = "/system/scale-function/scale-err"
        self.assertJsonError(d.request("POST", path, {"serviceName": "scale-err"}), 400, "'replicas'")
        self.assertJsonError(d.request("POST", path, {"serviceName": "scale-err", "replicas": -1}),
                             400, "'replicas'")
        self.assertJsonError(d.request("POST", path, {"serviceName": "other", "replicas": 1}),
                             400, "'serviceName'")
        self.assertJsonError(d.request("POST", path, b"nope"), 400)
        self.assertJsonError(d.scale("not-deployed", 1), 404)

    def test_info_and_health(self):
        d = self.daemon
        r = d.get("/healthz")
        self.assertEqual((r.status, r.json()), (200, {"status": "ok"}))
        info = d.get("/system/info").json()
        self.assertEqual(info["provider"], "faasvisor")  # faas-provider's flat ProviderInfo
        self.assertEqual(info["faasvisor"]["pid"], d.pid)
        roots = info["faasvisor"]["cgroup_roots"]
        self.assertTrue(roots, info)
        for root in roots:
            self.assertTrue(root.endswith("/faasvisor/node-%d" % d.pid), root)
            self.assertTrue(os.path.isdir(root), root)
        # The pre-made sandboxes live there as stem-N.
        stems = [n for n in os.listdir(roots[0]) if n.startswith("stem-")]
        self.assertGreaterEqual(len(stems), 1, os.listdir(roots[0]))
        self.assertTrue(any(b["name"] == "process" and b["available"]
                            for b in info["faasvisor"]["backends"]))

    def test_instance_pids_are_daemon_children_in_cgroups(self):
        d = self.daemon
        d.deploy("tree")
        r = d.invoke("tree", b"x")
        pid = d.instance_pid("tree", int(r.header("X-Faasvisor-Instance")))
        self.assertTrue(process_alive(pid))
        entry = d.record_pid(pid)
        self.assertIsNotNone(entry, "instance %d is not a child of the daemon" % pid)
        self.assertTrue(entry["cgroups"], "instance %d is in no faasvisor cgroup" % pid)
        for path in entry["cgroups"]:
            self.assertIn("/faasvisor/node-%d/" % d.pid, path)
        # The memory limit is applied to the instance's cgroup (v1: memory.limit_in_bytes).
        mem = [p for p in entry["cgroups"] if "/memory/" in p]
        if mem:
            with open(os.path.join(mem[0], "memory.limit_in_bytes")) as f:
                self.assertEqual(int(f.read()), 128 << 20)


class LifecycleEdgeTests(DaemonTestCase):
    """Updates, deletes and disconnects that race with running or waiting invocations."""

    FLAGS = ("--stem-pool", "4")

    def test_put_update_while_booting(self):
        # An invocation waiting for a booting instance of the old definition is served by
        # an instance of the new one; the old instance retires once ready.
        d = self.daemon
        d.deploy("upd-boot", image=SLOWBOOT_IMAGE, process=SLOWBOOT_PROCESS, memory="128Mi",
                 env={"FV_BOOT_DELAY_MS": str(int(scaled(1500)))}, max_instances=2,
                 timeout="60s")
        got = []
        t = threading.Thread(target=lambda: got.append(
            d.invoke("upd-boot", b"queued", timeout=scaled(30))))
        t.start()
        wait_until(lambda: d.stats("upd-boot")["invocations"]["queued"] == 1, scaled(10),
                   "the invocation to wait for the boot")
        old = d.instances("upd-boot")
        self.assertEqual(len(old), 1)
        d.deploy("upd-boot", image=SLOWBOOT_IMAGE, process=SLOWBOOT_PROCESS, memory="128Mi",
                 env={"FV_BOOT_DELAY_MS": "0"}, max_instances=2, timeout="60s", method="PUT")
        t.join(scaled(30))
        self.assertEqual(len(got), 1)
        self.assertEqual((got[0].status, got[0].body), (200, b"queued"), got[0])
        d.assert_process_gone(old[0]["pid"])
        info = d.function("upd-boot")
        self.assertEqual(info["faasvisor"]["generation"], 2)
        self.assertTrue(all(i["id"] != old[0]["id"] for i in info["faasvisor"]["instances"]))

    def test_delete_with_busy_and_queued(self):
        d = self.daemon
        d.deploy("del-busy", image=MISBEHAVE_IMAGE, process="./misbehave", max_instances=1,
                 timeout="60s")
        self.assertEqual(d.scale("del-busy", 1).status, 202)
        d.wait_warm("del-busy", 1)
        pid = d.instances("del-busy")[0]["pid"]
        got = {}

        def call(tag, query):
            got[tag] = d.invoke("del-busy", tag, query=query, timeout=scaled(30))

        busy = threading.Thread(target=call, args=(b"busy", "mode=slow&ms=%d" % int(scaled(1000))))
        busy.start()
        wait_until(lambda: d.stats("del-busy")["instances"]["busy"] == 1, scaled(10), "busy")
        queued = threading.Thread(target=call, args=(b"queued", ""))
        queued.start()
        wait_until(lambda: d.stats("del-busy")["invocations"]["queued"] == 1, scaled(10), "queued")
        r = d.request("DELETE", "/system/functions", {"functionName": "del-busy"})
        self.assertEqual(r.status, 202, r)
        queued.join(scaled(10))
        self.assertFalse(queued.is_alive(), "the queued invocation was not answered on delete")
        self.assertJsonError(got[b"queued"], 503, "deleted")
        busy.join(scaled(30))
        # The running invocation finishes; then its instance stops.
        self.assertEqual((got[b"busy"].status, got[b"busy"].body), (200, b"busy"))
        d.assert_process_gone(pid)

    def test_client_leaves_while_running(self):
        # The instance finishes the abandoned invocation and serves the next one warm.
        d = self.daemon
        d.deploy("leaver", image=MISBEHAVE_IMAGE, process="./misbehave", max_instances=1,
                 timeout="60s")
        s = d.raw_socket()
        s.sendall(raw_request("POST", "/function/leaver?mode=slow&ms=%d" % int(scaled(500)), b"gone"))
        wait_until(lambda: d.stats("leaver")["instances"]["busy"] == 1, scaled(10), "busy")
        s.close()
        wait_until(lambda: d.stats("leaver")["instances"]["warm"] == 1, scaled(10),
                   "the instance to finish the abandoned invocation")
        r = d.invoke("leaver", b"next")
        self.assertEqual((r.status, r.body, r.header("X-Faasvisor-Start")), (200, b"next", "warm"))
        self.assertEqual(len(d.instances("leaver")), 1)

    def test_client_leaves_while_queued(self):
        # EOF from a client may be a half-close after its last request, so the node may still
        # run a queued invocation whose client left; either way nothing breaks: the answer
        # goes nowhere, the instance stays usable and the queue does not stall.
        d = self.daemon
        d.deploy("qleaver", image=MISBEHAVE_IMAGE, process="./misbehave", max_instances=1,
                 timeout="60s")
        self.assertEqual(d.scale("qleaver", 1).status, 202)
        d.wait_warm("qleaver", 1)
        got = []
        t = threading.Thread(target=lambda: got.append(d.invoke(
            "qleaver", b"hold", query="mode=slow&ms=%d" % int(scaled(800)))))
        t.start()
        wait_until(lambda: d.stats("qleaver")["instances"]["busy"] == 1, scaled(10), "busy")
        s = d.raw_socket()
        s.sendall(raw_request("POST", "/function/qleaver?mode=slow&ms=200", b"abandoned"))
        wait_until(lambda: d.stats("qleaver")["invocations"]["queued"] == 1, scaled(10),
                   "queued")
        s.close()
        t.join(scaled(30))
        self.assertEqual((got[0].status, got[0].body), (200, b"hold"))
        wait_until(lambda: d.stats("qleaver")["invocations"]["queued"] == 0
                   and d.stats("qleaver")["instances"]["busy"] == 0, scaled(10),
                   "the queue to drain")
        r = d.invoke("qleaver", b"after")
        self.assertEqual((r.status, r.body, r.header("X-Faasvisor-Start")), (200, b"after", "warm"))
        self.assertEqual(len(d.instances("qleaver")), 1)
        self.assertTrue(d.healthy())

    def test_limits_reach_the_cgroup(self):
        d = self.daemon
        d.deploy("limited", memory="48Mi", cpu="250m")
        r = d.invoke("limited", b"x")
        pid = d.instance_pid("limited", int(r.header("X-Faasvisor-Instance")))
        d.record_children()
        procs = {pid: d.record_pid(pid)}
        procs.update(d.recorded_below(pid))
        dirs = {p for e in procs.values() if e for p in e["cgroups"]}
        checked = 0
        for path in dirs:
            if "/memory/" in path and os.path.exists(os.path.join(path, "memory.limit_in_bytes")):
                with open(os.path.join(path, "memory.limit_in_bytes")) as f:
                    self.assertEqual(int(f.read()), 48 << 20, path)
                checked += 1
            if "/cpu/" in path and os.path.exists(os.path.join(path, "cpu.cfs_quota_us")):
                with open(os.path.join(path, "cpu.cfs_quota_us")) as f:
                    quota = int(f.read())
                with open(os.path.join(path, "cpu.cfs_period_us")) as f:
                    period = int(f.read())
                self.assertEqual(quota * 1000 // period, 250, path)
                checked += 1
            if os.path.exists(os.path.join(path, "memory.max")):  # cgroup v2
                with open(os.path.join(path, "memory.max")) as f:
                    self.assertEqual(int(f.read()), 48 << 20, path)
                checked += 1
        self.assertGreaterEqual(checked, 1, "no limit file found in %s" % sorted(dirs))

    def test_many_keep_alive_clients(self):
        d = self.daemon
        d.deploy("ka-many", max_instances=8)

        def client(c):
            conn = d.connect()
            try:
                out = []
                for i in range(15):
                    body = b"client %d request %d" % (c, i)
                    r = d.invoke("ka-many", body, conn=conn)
                    out.append(r.status == 200 and r.body == body)
                return all(out)
            finally:
                conn.close()

        results = parallel(client, [(c,) for c in range(10)], timeout=scaled(60))
        self.assertEqual(results, [True] * 10)
        inv = d.stats("ka-many")["invocations"]
        self.assertEqual(inv["cold"] + inv["warm"], 150, inv)
        self.assertLessEqual(len(d.instances("ka-many")), 8)
