"""OpenFaaS clients, replayed: the request sequences faas-cli 0.16 (proxy/) and the OpenFaaS
gateway (handlers/, plugin/external.go, scaling/, metrics/exporter.go) send, byte for byte as
docs/openfaas.md records them, against the real daemon; every answer is checked the way the
client reads it (Go's encoding/json into faas-provider's types, so a wrongly typed field fails
here as it would fail there)."""

import datetime
import json
import re
import shutil
import time
import unittest
import uuid

import test_containers as containers  # its images; a module, so its classes do not run twice

from harness import (DaemonTestCase, ECHO_IMAGE, MISBEHAVE_IMAGE, REQINFO_IMAGE, REQINFO_PROCESS,
                     RawReader, scaled, wait_until)

FAAS_CLI_UA = "faas-cli/0.16.38"
# What faas-cli's newRequest sets on every management call with a body.
CLI_HEADERS = {"Content-Type": "application/json", "User-Agent": FAAS_CLI_UA}
# What the gateway's forwarding proxy adds to each request it passes on (buildUpstreamRequest).
GATEWAY_HEADERS = {"X-Forwarded-Host": "127.0.0.1:8080", "X-Forwarded-For": "127.0.0.1:51234",
                   "User-Agent": "Go-http-client/1.1"}

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")


def go_string(v):
    return isinstance(v, str)


def go_uint(v):
    # encoding/json refuses 1.0, -1 and strings for a uint64 field.
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def go_float(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def go_string_map(v):
    return v is None or (isinstance(v, dict) and all(go_string(x) for x in v.values()))


def go_time(v):
    """time.Time's UnmarshalJSON: RFC 3339, fractional seconds allowed."""
    return go_string(v) and RFC3339.match(v) is not None


def parse_go_time(v):
    v = re.sub(r"\.(\d{6})\d*", r".\1", v).replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(v)


FUNCTION_STATUS = {  # faas-provider types.FunctionStatus, json tag -> check
    "name": go_string, "image": go_string, "namespace": go_string, "envProcess": go_string,
    "envVars": go_string_map, "labels": go_string_map, "annotations": go_string_map,
    "constraints": lambda v: v is None or (isinstance(v, list) and all(go_string(x) for x in v)),
    "secrets": lambda v: v is None or (isinstance(v, list) and all(go_string(x) for x in v)),
    "limits": lambda v: v is None or (isinstance(v, dict) and all(go_string(x) for x in v.values())),
    "requests": lambda v: v is None or (isinstance(v, dict) and all(go_string(x) for x in v.values())),
    "readOnlyRootFilesystem": lambda v: isinstance(v, bool),
    "invocationCount": go_float, "replicas": go_uint, "availableReplicas": go_uint,
    "createdAt": go_time,
    "usage": lambda v: v is None or (isinstance(v, dict) and all(go_float(x) for x in v.values())),
}


class OpenFaaSTests(DaemonTestCase):
    FLAGS = ("--stem-pool", "4")

    # -- the clients' parsing --

    def unmarshal_status(self, obj):
        """json.Unmarshal(body, &types.FunctionStatus{}) succeeds and yields the fields."""
        self.assertIsInstance(obj, dict)
        for key, check in FUNCTION_STATUS.items():
            if key in obj:
                self.assertTrue(check(obj[key]), "field %r = %r does not unmarshal into FunctionStatus"
                                % (key, obj[key]))
        return obj

    def cli(self, method, path, body=None, headers=None):
        h = dict(CLI_HEADERS) if body is not None else {"User-Agent": FAAS_CLI_UA}
        h.update(headers or {})
        return self.daemon.request(method, path, body, h)

    def cli_deploy(self, spec):
        """proxy.DeployFunction with the default --update=true: PUT, then POST on 404. Returns
        the statuses seen."""
        r = self.cli("PUT", "/system/functions", json.dumps(spec))
        statuses = [r.status]
        if r.status == 404:
            r = self.cli("POST", "/system/functions", json.dumps(spec))
            statuses.append(r.status)
        return statuses, r

    def cli_spec(self, name, **extra):
        # json.Marshal(types.FunctionDeployment) as proxy/deploy.go fills it for
        # `faas-cli deploy -f stack.yml`: the image gets ":latest" (schema.BuildImageName),
        # labels and annotations are always present (possibly {}), the rest omitempty.
        spec = {"service": name, "image": ECHO_IMAGE + ":latest", "envProcess": "./echo",
                "labels": {}, "annotations": {}}
        spec.update(extra)
        return spec

    def remove(self, name, namespace=None):
        body = {"functionName": name}
        if namespace:
            body["namespace"] = namespace
        return self.cli("DELETE", "/system/functions", json.dumps(body))

    # -- faas-cli --

    def test_faas_cli_deploy_update_describe_list_remove(self):
        spec = self.cli_spec("cli-fn", envVars={"GREETING": "hi"}, limits={"memory": "64Mi"},
                             labels={"com.openfaas.scale.max": "3"})
        statuses, r = self.cli_deploy(spec)
        self.assertEqual(statuses, [404, 202], r)  # deploy.go: 200/201/202 print "Deployed."
        created = self.unmarshal_status(self.cli("GET", "/system/function/cli-fn?usage=1").json())
        self.assertEqual(created["name"], "cli-fn")
        self.assertEqual(created["image"], ECHO_IMAGE + ":latest")  # as deployed
        self.assertEqual(created["faasvisor"]["imagePath"], ECHO_IMAGE)  # what runs
        self.assertEqual(created["namespace"], "openfaas-fn")
        self.assertEqual(created["envVars"], {"GREETING": "hi"})
        self.assertEqual(created["limits"]["memory"], "64Mi")
        self.assertTrue(go_time(created["createdAt"]), created)
        age = datetime.datetime.now(datetime.timezone.utc) - parse_go_time(created["createdAt"])
        self.assertLess(abs(age.total_seconds()), 60, created["createdAt"])

        r = self.cli("POST", "/function/cli-fn", b"hello", {"Content-Type": "text/plain"})
        self.assertEqual((r.status, r.body), (200, b"hello"), r)

        # Run again: the PUT now succeeds (a rolling update); createdAt stays the first deploy's.
        spec["envVars"] = {"GREETING": "again"}
        statuses, r = self.cli_deploy(spec)
        self.assertEqual(statuses, [202], r)
        for path in ("/system/function/cli-fn?usage=1",
                     "/system/function/cli-fn?namespace=openfaas-fn&usage=1"):
            f = self.unmarshal_status(self.cli("GET", path).json())
            self.assertEqual(f["envVars"], {"GREETING": "again"})
            self.assertEqual(f["createdAt"], created["createdAt"])

        # faas-cli list (and list -n openfaas-fn): []FunctionStatus, sorted by createdAt.
        for path in ("/system/functions", "/system/functions?namespace=openfaas-fn"):
            r = self.cli("GET", path)
            self.assertEqual(r.status, 200, r)
            listed = [self.unmarshal_status(f) for f in r.json()]
            mine = [f for f in listed if f["name"] == "cli-fn"]
            self.assertEqual(len(mine), 1)
            self.assertGreaterEqual(mine[0]["invocationCount"], 1)

        # faas-cli remove: 200/201/202, then 404 ("No existing function to remove").
        self.assertEqual(self.remove("cli-fn").status, 202)
        self.assertEqual(self.remove("cli-fn").status, 404)
        self.assertEqual(self.cli("GET", "/system/function/cli-fn?usage=1").status, 404)

    def test_faas_cli_with_namespace_flag(self):
        # `faas-cli deploy -n openfaas-fn`, `invoke -n`, `describe -n`, `logs -n`, `remove -n`.
        spec = self.cli_spec("ns-fn", namespace="openfaas-fn")
        statuses, r = self.cli_deploy(spec)
        self.assertEqual(statuses, [404, 202], r)
        # invoke.go: gateway + "/function/" + name + "." + namespace
        r = self.daemon.request("POST", "/function/ns-fn.openfaas-fn", b"dotted",
                                {"User-Agent": FAAS_CLI_UA + " (openfaas; linux; amd64)",
                                 "Content-Type": "text/plain"})
        self.assertEqual((r.status, r.body), (200, b"dotted"), r)
        r = self.daemon.request("GET", "/function/ns-fn.openfaas-fn/sub/path?q=1")
        self.assertEqual(r.status, 200, r)
        f = self.unmarshal_status(self.cli("GET", "/system/function/ns-fn?namespace=openfaas-fn&usage=1").json())
        self.assertEqual(f["namespace"], "openfaas-fn")
        # logs.go: name, namespace, follow=false, tail when given.
        r = self.cli("GET", "/system/logs?follow=false&name=ns-fn&namespace=openfaas-fn&tail=5")
        self.assertEqual(r.status, 200, r)
        for line in r.body.decode().splitlines():
            msg = json.loads(line)  # logs.Message
            self.assertEqual(msg["name"], "ns-fn")
            self.assertEqual(msg["namespace"], "openfaas-fn")
            self.assertTrue(go_time(msg["timestamp"]), msg)
            self.assertTrue(go_string(msg["text"]) and go_string(msg["instance"]), msg)
        self.assertEqual(self.remove("ns-fn", "openfaas-fn").status, 202)

    def test_faas_cli_namespaces(self):
        r = self.cli("GET", "/system/namespaces")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), ["openfaas-fn"])  # json.Unmarshal into []string
        r = self.cli("GET", "/system/namespace/openfaas-fn")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["name"], "openfaas-fn")
        self.assertJsonError(self.cli("GET", "/system/namespace/team-a"), 404, "team-a")
        self.assertEqual(self.cli("POST", "/system/namespace/team-a", "{}").status, 405)

    def test_faas_cli_version_reads_the_gateway_shape(self):
        # version.go: json.Unmarshal into gateway types.GatewayInfo, then it dereferences
        # gatewayInfo.Version and gatewayInfo.Provider.Version (a nil one panics).
        info = self.cli("GET", "/system/info").json()
        self.assertIsInstance(info["provider"], dict, info)
        self.assertIsInstance(info["version"], dict, info)
        for version in (info["version"], info["provider"]["version"]):
            self.assertTrue(go_string(version["sha"]) and version["sha"], version)
            self.assertTrue(go_string(version["release"]) and version["release"], version)
        self.assertEqual(info["provider"]["provider"], "faasvisor")
        self.assertEqual(info["provider"]["orchestration"], "faasvisor")
        self.assertTrue(go_string(info["arch"]) and info["arch"], info)
        self.assertIn("backends", info["faasvisor"])

    def test_gateway_reads_the_provider_shape(self):
        # infohandler.go: json.Unmarshal into *types.ProviderInfo {provider, version, orchestration},
        # forwarded with the client's headers (faas-cli's User-Agent too) plus X-Forwarded-*.
        for headers in (GATEWAY_HEADERS, dict(GATEWAY_HEADERS, **{"User-Agent": FAAS_CLI_UA}), {}):
            with self.subTest(headers=headers):
                r = self.daemon.request("GET", "/system/info", headers=headers)
                self.assertEqual(r.status, 200, r)
                info = r.json()
                self.assertEqual(info["provider"], "faasvisor")
                self.assertEqual(info["orchestration"], "faasvisor")
                self.assertEqual(set(info["version"]) - {"commit_message"}, {"sha", "release"})
                self.assertTrue(info["version"]["sha"] and info["version"]["release"], info)
                self.assertIn("memory_budget_bytes", info["faasvisor"])

    def test_faas_cli_deploy_fields_are_kept_or_refused(self):
        # Everything faas-cli can put in FunctionDeployment from a stack.yml.
        spec = self.cli_spec("full-fn", namespace="openfaas-fn",
                             constraints=["kubernetes.io/os=linux", "node.platform.os == linux"],
                             limits={"memory": "64Mi", "cpu": "500m"}, requests={"memory": "32Mi"},
                             readOnlyRootFilesystem=True, annotations={"topic": "orders"})
        statuses, r = self.cli_deploy(spec)
        self.assertEqual(statuses, [404, 202], r)
        f = self.unmarshal_status(self.cli("GET", "/system/function/full-fn?usage=1").json())
        self.assertEqual(f["constraints"], spec["constraints"])
        self.assertEqual(f["requests"], {"memory": "32Mi"})
        self.assertIs(f["readOnlyRootFilesystem"], True)
        self.assertEqual(f["limits"], {"memory": "64Mi", "cpu": "500m"})
        self.assertEqual(f["annotations"], {"topic": "orders"})
        self.assertEqual(self.remove("full-fn").status, 202)

        refused = [
            ("namespace", {"namespace": "team-a"}),
            ("requests.cpu", {"requests": {"cpu": "100m"}}),
            ("requests.memory", {"limits": {"memory": "64Mi"}, "requests": {"memory": "128Mi"}}),
            ("constraints", {"constraints": ["kubernetes.io/arch=s390x"]}),
            ("limits.nvidia.com/gpu", {"limits": {"nvidia.com/gpu": "1"}}),
            ("secrets", {"secrets": ["db-password"]}),
            ("registryAuth", {"registryAuth": "dXNlcjpwYXNz"}),
            ("readOnlyRootFilesystem", {"readOnlyRootFilesystem": "yes"}),
        ]
        for field, extra in refused:
            with self.subTest(field=field):
                r = self.cli("POST", "/system/functions", json.dumps(self.cli_spec("refused-fn", **extra)))
                self.assertJsonError(r, 400, "'%s'" % field)
        self.assertEqual(self.cli("GET", "/system/function/refused-fn").status, 404)

    def test_read_only_root_filesystem_is_honoured(self):
        # The function cannot write outside /tmp; /tmp is writable (as OpenFaaS gives it).
        spec = self.cli_spec("ro-fn", image=MISBEHAVE_IMAGE + ":latest", envProcess="./isolation",
                             readOnlyRootFilesystem=True)
        self.assertEqual(self.cli_deploy(spec)[0], [404, 202])
        r = self.daemon.invoke("ro-fn")
        self.assertEqual(r.status, 200, r)
        report = r.json()
        self.assertEqual(report["root_write"], "EROFS", report)
        self.assertEqual(report["tmp_write"], "ok", report)
        self.assertEqual(self.remove("ro-fn").status, 202)

    def test_other_namespaces_are_refused(self):
        d = self.daemon
        self.assertEqual(self.cli_deploy(self.cli_spec("ns-only"))[0], [404, 202])
        for method, path, body in (
                ("GET", "/system/functions?namespace=team-a", None),
                ("GET", "/system/function/ns-only?namespace=team-a&usage=1", None),
                ("GET", "/system/logs?name=ns-only&namespace=team-a&follow=false", None),
                ("POST", "/system/scale-function/ns-only?namespace=team-a", {"serviceName": "ns-only", "replicas": 1}),
                ("POST", "/system/scale-function/ns-only", {"serviceName": "ns-only", "replicas": 1, "namespace": "team-a"}),
                ("DELETE", "/system/functions", {"functionName": "ns-only", "namespace": "team-a"})):
            with self.subTest(method=method, path=path):
                self.assertJsonError(d.request(method, path, body), 400, ["'namespace'", "team-a"])
        r = d.invoke("ns-only.team-a", b"x")
        self.assertJsonError(r, 404, "team-a")
        self.assertEqual(r.header("X-OpenFaaS-Internal"), "proxy")
        self.assertIsNotNone(d.function("ns-only"))  # the DELETE above did not remove it
        self.assertEqual(self.remove("ns-only").status, 202)

    # -- the gateway --

    def test_gateway_scale_from_zero_then_invoke(self):
        d = self.daemon
        self.assertEqual(self.cli_deploy(self.cli_spec(
            "gw-fn", image=REQINFO_IMAGE, envProcess=REQINFO_PROCESS,
            labels={"com.openfaas.scale.min": "0", "com.openfaas.scale.max": "4"}))[0], [404, 202])

        # metrics/exporter.go: the namespaces, then the functions of each.
        self.assertEqual(d.request("GET", "/system/namespaces", headers=GATEWAY_HEADERS).json(), ["openfaas-fn"])
        listed = d.request("GET", "/system/functions?namespace=openfaas-fn", headers=GATEWAY_HEADERS).json()
        self.assertIn("gw-fn", [self.unmarshal_status(f)["name"] for f in listed])

        # plugin/external.go GetReplicas: no auth here, usage=false.
        def get_replicas():
            r = d.request("GET", "/system/function/gw-fn?namespace=openfaas-fn&usage=false")
            self.assertEqual(r.status, 200, r)
            return self.unmarshal_status(r.json())
        f = get_replicas()
        self.assertEqual(f.get("replicas", 0), 0)
        self.assertEqual(f.get("availableReplicas", 0), 0)
        self.assertEqual(f["labels"]["com.openfaas.scale.max"], "4")  # extractLabelValue reads these
        self.assertEqual(f["labels"]["com.openfaas.scale.min"], "0")

        # scaling/function_scaler.go: replicas == 0, so SetReplicas(minReplicas=1) (its body has
        # no namespace; the query has), accepted on 200 or 202...
        r = d.request("POST", "/system/scale-function/gw-fn?namespace=openfaas-fn",
                      json.dumps({"serviceName": "gw-fn", "replicas": 1}))
        self.assertIn(r.status, (200, 202), r)
        # ...then GetReplicas every 100 ms until availableReplicas > 0.
        wait_until(lambda: get_replicas().get("availableReplicas", 0) > 0, scaled(20),
                   "availableReplicas > 0 after the gateway's scale-up")
        self.assertGreaterEqual(get_replicas()["replicas"], 1)

        # handlers/callid_middleware.go + forwarding_proxy.go: the call, with its id and start.
        call_id = str(uuid.uuid4())
        start_ns = time.time_ns() - 1_500_000_000  # the scale-up above took time in the gateway
        headers = dict(GATEWAY_HEADERS, **{"X-Call-Id": call_id, "X-Start-Time": str(start_ns),
                                           "Content-Type": "text/plain"})
        r = d.request("POST", "/function/gw-fn.openfaas-fn/sub?x=1", b"through the gateway", headers)
        self.assertEqual(r.status, 200, r)
        seen = {k.lower(): v for k, v in r.json()["headers"]}
        self.assertEqual(seen["x-call-id"], call_id)
        self.assertEqual(seen["x-start-time"], str(start_ns))
        self.assertEqual(seen["x-forwarded-for"], "127.0.0.1:51234")
        self.assertEqual(r.json()["path"], "/sub")
        self.assertEqual(r.header("X-Call-Id"), call_id)
        self.assertEqual(r.header("X-Start-Time"), str(start_ns))
        self.assertIsNone(r.header("X-OpenFaaS-Internal"))
        # X-Start-Time honoured: the duration counts from the gateway's arrival.
        self.assertGreaterEqual(float(r.header("X-Duration-Seconds")), 1.5, r)
        self.assertEqual(self.remove("gw-fn").status, 202)

    def test_call_id_and_start_time_made_when_absent(self):
        d = self.daemon
        self.assertEqual(self.cli_deploy(self.cli_spec("id-fn", image=REQINFO_IMAGE,
                                                       envProcess=REQINFO_PROCESS))[0], [404, 202])
        ids = set()
        for _ in range(3):
            before = time.time_ns()
            r = d.invoke("id-fn", b"")
            self.assertEqual(r.status, 200, r)
            seen = {k.lower(): v for k, v in r.json()["headers"]}
            call_id = r.header("X-Call-Id")
            self.assertEqual(seen["x-call-id"], call_id)
            self.assertEqual(str(uuid.UUID(call_id)), call_id)  # a UUID, as the gateway makes
            self.assertEqual(uuid.UUID(call_id).version, 4)
            ids.add(call_id)
            start = int(seen["x-start-time"])
            self.assertEqual(r.header("X-Start-Time"), seen["x-start-time"])
            self.assertLessEqual(abs(start - before), 5_000_000_000)
            self.assertLess(float(r.header("X-Duration-Seconds")), scaled(20))
        self.assertEqual(len(ids), 3)
        # An empty one is made too, not passed on empty beside a made one.
        r = d.invoke("id-fn", b"", headers={"X-Call-Id": ""})
        seen = [v for k, v in r.json()["headers"] if k.lower() == "x-call-id"]
        self.assertEqual(len(seen), 1, seen)
        self.assertEqual(uuid.UUID(seen[0]).version, 4)
        self.assertEqual(r.header("X-Call-Id"), seen[0])
        # A start time older than the function's timeout is not honoured (the call would be
        # over before it began): it passes on unchanged, the duration counts from arrival.
        stale = str(time.time_ns() - 3600 * 1_000_000_000)
        r = d.invoke("id-fn", b"", headers={"X-Start-Time": stale})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("X-Start-Time"), stale)
        self.assertLess(float(r.header("X-Duration-Seconds")), 60)
        self.assertEqual(self.remove("id-fn").status, 202)

    def test_timeout_counts_from_the_gateways_start_time(self):
        # faasvisor.timeout 3s; the function takes 1.5 s. Arriving fresh it answers; arriving
        # with a gateway X-Start-Time 2 s old (a scale-from-zero wait) the whole call passes
        # 3 s, so it is the node's 504, marked as such.
        d = self.daemon
        spec = self.cli_spec("late-fn", image=MISBEHAVE_IMAGE, envProcess="./misbehave",
                             annotations={"faasvisor.timeout": "3s"})
        self.assertEqual(self.cli_deploy(spec)[0], [404, 202])
        r = d.invoke("late-fn", b"in time", query="mode=slow&ms=1500")
        self.assertEqual((r.status, r.body), (200, b"in time"), r)
        start_ns = time.time_ns() - 2_000_000_000
        r = d.invoke("late-fn", b"late", query="mode=slow&ms=1500",
                     headers={"X-Start-Time": str(start_ns), "X-Call-Id": "late-call"})
        # Counted from arrival it would be a 200 after 1.5 s: the 504 is the header's doing.
        self.assertJsonError(r, 504)
        self.assertEqual(r.header("X-OpenFaaS-Internal"), "proxy")
        self.assertEqual(r.header("X-Call-Id"), "late-call")
        self.assertEqual(self.remove("late-fn").status, 202)

    def test_node_errors_are_marked_and_function_errors_are_not(self):
        d = self.daemon
        r = d.invoke("no-such-fn", b"x")
        self.assertJsonError(r, 404, "no-such-fn")
        self.assertEqual(r.header("X-OpenFaaS-Internal"), "proxy")
        r = d.invoke("no-such-fn.openfaas-fn", b"x")
        self.assertJsonError(r, 404, "no-such-fn")
        self.assertEqual(r.header("X-OpenFaaS-Internal"), "proxy")

        self.assertEqual(self.cli_deploy(self.cli_spec(
            "err-fn", image=MISBEHAVE_IMAGE, envProcess="./misbehave"))[0], [404, 202])
        r = d.invoke("err-fn", query="mode=status&code=500")
        self.assertEqual(r.status, 500, r)  # the function's own 500
        self.assertIsNone(r.header("X-OpenFaaS-Internal"), r)
        r = d.invoke("err-fn", query="mode=crash")
        self.assertEqual(r.status, 502, r)  # the node's: the instance died
        self.assertEqual(r.header("X-OpenFaaS-Internal"), "proxy")
        self.assertIsNotNone(r.header("X-Call-Id"))
        self.assertEqual(self.remove("err-fn").status, 202)

        # Refused before routing (the declared body is over the limit): marked on /function/
        # only, as faas-provider marks only its proxy's answers.
        for path, marked in (("/function/err-fn", True), ("/system/functions", False)):
            s = d.raw_socket()
            try:
                s.sendall(b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                          % (path.encode(), 1 << 30))
                r = RawReader(s).read_response()
            finally:
                s.close()
            self.assertJsonError(r, 413)
            self.assertEqual(r.header("X-OpenFaaS-Internal"), "proxy" if marked else None, (path, r))


@unittest.skipUnless(shutil.which("crun"), "crun is not installed")
class OpenFaaSContainerTests(DaemonTestCase):
    """faas-cli's deploy of a container image: ":latest" appended to the rootfs directory,
    readOnlyRootFilesystem on the crun backend."""
    FLAGS = ("--stem-pool", "0")

    @classmethod
    def prepare_daemon(cls):
        containers.build_images()

    def test_tagged_rootfs_read_only_on_crun(self):
        d = self.daemon
        spec = {"service": "ro-crun", "image": containers.rootfs("isolation") + ":latest",
                "envProcess": "/isolation", "labels": {}, "annotations": {"faasvisor.backend": "crun"},
                "readOnlyRootFilesystem": True}
        r = d.request("PUT", "/system/functions", json.dumps(spec), CLI_HEADERS)
        self.assertEqual(r.status, 404, r)
        r = d.request("POST", "/system/functions", json.dumps(spec), CLI_HEADERS)
        self.assertEqual(r.status, 202, r)
        f = d.function("ro-crun")
        self.assertEqual(f["image"], spec["image"])
        self.assertIs(f["readOnlyRootFilesystem"], True)
        r = d.invoke("ro-crun")
        self.assertEqual(r.status, 200, r)
        report = r.json()
        self.assertEqual(report["root_write"], "EROFS", report)
        self.assertEqual(report["tmp_write"], "ok", report)
        r = d.request("DELETE", "/system/functions", {"functionName": "ro-crun"}, CLI_HEADERS)
        self.assertEqual(r.status, 202, r)
