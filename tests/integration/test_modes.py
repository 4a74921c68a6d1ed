"""Functions that do not speak the instance protocol (docs/modes.md): faasvisor.mode http (an
HTTP server in the sandbox, as of-watchdog's http mode runs it) and stdio (the classic
watchdog: one run per request), through faasvisor-adapter, on the process backend and on
crun, runc and gVisor, where an image shaped like `faas-cli build` output (the python3-http
template: fwatchdog as the command, fprocess/mode/upstream_url in Env; a classic-watchdog
image: fprocess alone) runs with no annotation at all.

Images are built here from Debian's python3 (tools/mkpyimage's interpreter layer with
http.server added), no network."""

import importlib.machinery
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest

from harness import BUILD, FUNCTIONS_DIR, ROOT, DaemonTestCase, scaled, wait_until

MODES_DIR = os.path.join(FUNCTIONS_DIR, "modes")
mkoci = importlib.machinery.SourceFileLoader("mkoci", os.path.join(ROOT, "tools", "mkoci")).load_module()

# The python3-http template's index.py, in the shape faas-cli build gives it (Flask and
# waitress there; the standard library's http.server here): the watchdog's upstream on :5000,
# calling function/handler.py's handle(event, context).
TEMPLATE_INDEX = b'''
import http.server, sys
from function import handler

class Event:
    def __init__(self, req, body):
        self.body, self.headers, self.method = body, req.headers, req.command
        self.path, _, self.query = req.path.partition("?")

class Context:
    hostname = "localhost"

class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def serve(self):
        n = int(self.headers.get("Content-Length") or 0)
        res = handler.handle(Event(self, self.rfile.read(n) if n else b""), Context())
        body = res.get("body", b"")
        body = body.encode() if isinstance(body, str) else body
        self.send_response(res.get("statusCode", 200))
        for k, v in res.get("headers", {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = serve
    def log_message(self, fmt, *args):
        sys.stderr.write(fmt % args + "\\n")

print("upstream listening on 5000", flush=True)
http.server.HTTPServer(("127.0.0.1", 5000), Upstream).serve_forever()
'''
TEMPLATE_HANDLER = b'''
def handle(event, context):
    return {"statusCode": 201, "body": b"python3-http:" + event.body,
            "headers": {"Content-Type": "text/plain", "X-Method": event.method, "X-Path": event.path}}
'''
# What faas-cli's images run as their command. Here it must never run: the adapter takes
# its place (an instance that ran it would fail to boot).
FAKE_WATCHDOG = b'''#!/usr/bin/python3
import sys
sys.stderr.write("fwatchdog: the real watchdog is not in this image\\n")
sys.exit(1)
'''


def python_layer(work):
    """Debian's python3 with what http.server, subprocess and site import (tools/mkpyimage)."""
    root = os.path.join(work, "python-http")
    if not os.path.isdir(root):
        subprocess.run(["/usr/bin/python3", "-c",
                        "import importlib.machinery, sys; m = importlib.machinery.SourceFileLoader("
                        "'mkpyimage', sys.argv[1]).load_module(); m.python_layer(sys.argv[2], sys.argv[3:])",
                        os.path.join(ROOT, "tools", "mkpyimage"), root, "site", "http.server", "urllib.parse",
                        "encodings.idna"],
                       check=True)
    return mkoci.layer_from_dir(root)


def build_watchdog_images(work):
    """(python3-http image, classic-watchdog image) as OCI layouts under work."""
    base = python_layer(work)
    common = [mkoci.entry("usr/bin/fwatchdog", data=FAKE_WATCHDOG, mode=0o755),
              mkoci.entry("usr/bin/python", "symlink", target="python3"),
              mkoci.entry("home", "dir"), mkoci.entry("home/app", "dir")]
    http_layer = mkoci.layer_from_entries(common + [
        mkoci.entry("home/app/index.py", data=TEMPLATE_INDEX),
        mkoci.entry("home/app/function", "dir"),
        mkoci.entry("home/app/function/__init__.py", data=b""),
        mkoci.entry("home/app/function/handler.py", data=TEMPLATE_HANDLER)])
    classic_layer = mkoci.layer_from_entries(common + [
        mkoci.entry("home/app/stdio.py", data=open(os.path.join(MODES_DIR, "stdio.py"), "rb").read())])
    env = ["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE=1"]
    http_image = os.path.join(work, "python3-http.oci")
    mkoci.write_layout(http_image, [base, http_layer], cmd=["fwatchdog"], workdir="/home/app",
                       env=env + ["fprocess=python index.py", "cgi_headers=true", "mode=http",
                                  "upstream_url=http://127.0.0.1:5000"])
    classic_image = os.path.join(work, "classic.oci")
    mkoci.write_layout(classic_image, [base, classic_layer], cmd=["fwatchdog"], workdir="/home/app",
                       env=env + ["fprocess=python3 stdio.py"])
    return http_image, classic_image


class ModeChecks:
    """The checks every backend passes; subclasses say how a function is deployed."""
    BACKEND = "process"

    def deploy_mode(self, name, mode, command, annotations=None, env=None, expect=202):
        raise NotImplementedError

    def invoke_ok(self, name, body=b"", **kw):
        r = self.daemon.invoke(name, body, timeout=scaled(60), **kw)
        self.assertEqual(r.status, 200, r)
        return r

    # http mode

    def test_http_mode_passes_requests_and_answers(self):
        self.deploy_mode("http-fn", "http", "python3 -B server.py 8081", {"faasvisor.port": "8081"})
        cold = self.daemon.invoke("http-fn", b"hello", path="/some/path", query="a=1&b=two",
                                  headers={"Content-Type": "text/x-test", "X-Call-Id": "call-1"}, timeout=scaled(60))
        self.assertEqual((cold.status, cold.body), (200, b"hello"), cold)
        self.assertEqual(cold.header("X-Faasvisor-Start"), "cold")
        self.assertEqual(cold.header("Content-Type"), "text/x-test")
        self.assertEqual(cold.header("X-Seen-Method"), "POST")
        self.assertEqual(cold.header("X-Seen-Path"), "/some/path")
        self.assertEqual(cold.header("X-Seen-Query"), "a=1&b=two")
        self.assertEqual(cold.header("X-Seen-Call-Id"), "call-1")
        instance = cold.header("X-Faasvisor-Instance")
        # Warm, on the same instance and server: methods, statuses, binary and large bodies.
        binary = bytes(range(256)) * 40
        warm = self.invoke_ok("http-fn", binary)
        self.assertEqual((warm.body, warm.header("X-Faasvisor-Start")), (binary, "warm"))
        self.assertEqual(warm.header("X-Faasvisor-Instance"), instance)
        self.assertEqual(self.daemon.invoke("http-fn", method="PUT", path="/status/418").status, 418)
        got = self.daemon.invoke("http-fn", method="GET", path="/status/404")
        self.assertEqual((got.status, got.header("X-Seen-Method")), (404, "GET"))
        early = self.daemon.invoke("http-fn", b"after 103", path="/early")
        self.assertEqual((early.status, early.body, early.header("X-Seen-Path")), (200, b"after 103", "/early"))
        head = self.daemon.invoke("http-fn", method="HEAD", path="/x")
        self.assertEqual((head.status, head.body), (200, b""))
        big = self.invoke_ok("http-fn", method="GET", path="/big", query="n=%d" % (3 << 20))
        self.assertEqual(big.body, b"x" * (3 << 20))
        after = self.invoke_ok("http-fn", b"still there")
        self.assertEqual((after.body, after.header("X-Faasvisor-Instance")), (b"still there", instance))
        self.assertEqual(self.daemon.function("http-fn")["faasvisor"]["mode"], "http")

    def test_http_mode_default_port_and_ready_only_once_listening(self):
        # The server sleeps before it listens: the first invocation waits for READY, which the
        # adapter sends only once the port answers (no refused connection, no 5xx).
        self.deploy_mode("http-slow", "http", "python3 -B server.py", env={"START_DELAY": "1.5"})
        started = time.monotonic()
        cold = self.invoke_ok("http-slow", b"after the listen")
        self.assertGreaterEqual(time.monotonic() - started, 1.4)
        self.assertEqual(cold.body, b"after the listen")
        self.assertGreaterEqual(self.daemon.stats("http-slow")["init_ms"]["max"], 1400)

    def test_http_mode_ready_path(self):
        # READY only once GET /ready answers 2xx: the server says 503 to its first 3 probes.
        self.deploy_mode("http-ready", "http", "python3 -B server.py 8082",
                         {"faasvisor.port": "8082", "faasvisor.ready_path": "/ready"}, env={"READY_AFTER": "3"})
        r = self.invoke_ok("http-ready", b"x")
        self.assertGreaterEqual(int(r.header("X-Ready-Probes")), 4, r)

    def test_http_mode_server_exit_ends_the_instance(self):
        self.deploy_mode("http-exit", "http", "python3 -B server.py")
        first = self.invoke_ok("http-exit", b"1")
        gone = self.daemon.invoke("http-exit", path="/exit", timeout=scaled(30))
        self.assertIn(gone.status, (500, 502), gone)
        # The next invocation gets a fresh instance.
        again = self.invoke_ok("http-exit", b"2")
        self.assertEqual(again.header("X-Faasvisor-Start"), "cold")
        self.assertNotEqual(again.header("X-Faasvisor-Instance"), first.header("X-Faasvisor-Instance"))

    # stdio mode

    def test_stdio_mode_runs_once_per_request(self):
        self.deploy_mode("stdio-fn", "stdio", "python3 -B stdio.py")
        r = self.daemon.invoke("stdio-fn", b"body in", path="/sub", query="k=v",
                               headers={"Content-Type": "text/x-stdio", "X-Call-Id": "abc"}, timeout=scaled(60))
        self.assertEqual(r.status, 200, r)
        out = r.json()
        self.assertEqual(out["body"], "body in")
        env = out["env"]
        self.assertEqual(env["Http_Method"], "POST")
        self.assertEqual(env["Http_Path"], "/sub")
        self.assertEqual(env["Http_Query"], "k=v")
        self.assertEqual(env["Http_Content_Type"], "text/x-stdio")
        self.assertEqual(env["Http_X_Call_Id"], "abc")
        self.assertEqual((env["Http_Content_Length"], env["Http_ContentLength"]), ("7", "7"))
        # The classic watchdog answers with the caller's Content-Type.
        self.assertEqual(r.header("Content-Type"), "text/x-stdio")
        second = self.invoke_ok("stdio-fn", b"again")
        self.assertEqual(second.header("X-Faasvisor-Start"), "warm")
        self.assertNotEqual(second.json()["pid"], out["pid"], "one run per request")
        raw = bytes(range(256)) * 64
        self.assertEqual(self.invoke_ok("stdio-fn", raw, query="raw=1").body, raw)

    def test_stdio_mode_exit_status_and_stderr(self):
        self.deploy_mode("stdio-err", "stdio", "python3 -B stdio.py")
        r = self.daemon.invoke("stdio-err", b"x", query="exit=3&stderr=to-the-log-%s" % self.BACKEND,
                               timeout=scaled(60))
        self.assertEqual(r.status, 500, r)
        self.assertTrue(r.body.startswith(b"exit status 3\n"), r.body)
        self.assertIn(b'"body": "x"', r.body)  # what it wrote, after the status line
        def logged():
            logs = self.daemon.get("/system/logs?name=stdio-err&follow=false").body.decode()
            return "to-the-log-" + self.BACKEND in logs
        wait_until(logged, scaled(10), "stderr in the function's log")
        # The instance lives on: a failed run is one request's answer.
        ok = self.invoke_ok("stdio-err", b"y")
        self.assertEqual(ok.header("X-Faasvisor-Start"), "warm")


class ProcessModeTests(ModeChecks, DaemonTestCase):
    FLAGS = ("--stop-grace-ms", "1000")

    def deploy_mode(self, name, mode, command, annotations=None, env=None, expect=202):
        spec = {"service": name, "image": MODES_DIR, "envProcess": command,
                "annotations": dict({"faasvisor.mode": mode}, **(annotations or {}))}
        if env:
            spec["envVars"] = env
        r = self.daemon.request("POST", "/system/functions", spec)
        self.assertEqual(r.status, expect, r)
        return r

    def test_bad_annotations_are_400(self):
        for annotations, field in (({"faasvisor.mode": "grpc"}, "faasvisor.mode"),
                                   ({"faasvisor.mode": "http", "faasvisor.port": "0"}, "faasvisor.port"),
                                   ({"faasvisor.mode": "http", "faasvisor.port": "http"}, "faasvisor.port"),
                                   ({"faasvisor.mode": "http", "faasvisor.ready_path": "ready"}, "faasvisor.ready_path")):
            r = self.daemon.request("POST", "/system/functions", {"service": "bad-mode", "image": MODES_DIR,
                                                                  "envProcess": "python3 server.py",
                                                                  "annotations": annotations})
            self.assertJsonError(r, 400, field)
        self.assertIsNone(self.daemon.function("bad-mode"))

    def test_protocol_is_the_default(self):
        r = self.daemon.request("POST", "/system/functions", {"service": "proto-default", "image": os.path.join(
            BUILD, "examples", "echo"), "envProcess": "./echo"})
        self.assertEqual(r.status, 202, r)
        self.assertEqual(self.daemon.function("proto-default")["faasvisor"]["mode"], "protocol")
        self.assertEqual(self.invoke_ok("proto-default", b"p").body, b"p")


class ImageModeChecks(ModeChecks):
    """On an OCI backend: the test scripts in an image, and the faas-cli-shaped images."""
    WORK = None
    http_image = classic_image = scripts_image = None

    @classmethod
    def setUpClass(cls):
        cls.WORK = tempfile.mkdtemp(prefix="fv-modes-")
        cls.CACHE = os.path.join(cls.WORK, "cache")
        cls.FLAGS = ("--stem-pool", "0", "--stop-grace-ms", "1000", "--image-cache", cls.CACHE)
        cls.http_image, cls.classic_image = build_watchdog_images(cls.WORK)
        layer = mkoci.layer_from_entries([
            mkoci.entry("function", "dir"),
            mkoci.entry("function/server.py", data=open(os.path.join(MODES_DIR, "server.py"), "rb").read()),
            mkoci.entry("function/stdio.py", data=open(os.path.join(MODES_DIR, "stdio.py"), "rb").read())])
        cls.scripts_image = os.path.join(cls.WORK, "scripts.oci")
        mkoci.write_layout(cls.scripts_image, [python_layer(cls.WORK), layer], workdir="/function",
                           env=["PATH=/usr/bin:/bin"])
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            shutil.rmtree(cls.WORK, ignore_errors=True)

    def deploy_mode(self, name, mode, command, annotations=None, env=None, expect=202):
        spec = {"service": name, "image": self.scripts_image, "envProcess": command,
                "annotations": dict({"faasvisor.mode": mode, "faasvisor.backend": self.BACKEND},
                                    **(annotations or {})), "limits": {"memory": "256Mi"}}
        if env:
            spec["envVars"] = env
        r = self.daemon.request("POST", "/system/functions", spec)
        self.assertEqual(r.status, expect, r)
        return r

    def deploy_image(self, name, image, **extra):
        spec = {"service": name, "image": image, "annotations": {"faasvisor.backend": self.BACKEND},
                "limits": {"memory": "256Mi"}}
        spec.update(extra)
        r = self.daemon.request("POST", "/system/functions", spec)
        self.assertEqual(r.status, 202, r)
        return r

    def test_python3_http_template_image_runs_as_is(self):
        self.deploy_image("py3http", self.http_image)
        info = self.daemon.function("py3http")["faasvisor"]
        self.assertEqual((info["mode"], info["port"]), ("http", 5000))
        r = self.daemon.invoke("py3http", b"abc", path="/p", timeout=scaled(60))
        self.assertEqual((r.status, r.body), (201, b"python3-http:abc"), r)
        self.assertEqual((r.header("X-Method"), r.header("X-Path")), ("POST", "/p"))
        self.assertEqual(self.daemon.invoke("py3http", b"d").body, b"python3-http:d")

    def test_classic_watchdog_image_runs_as_is(self):
        self.deploy_image("classic", self.classic_image)
        self.assertEqual(self.daemon.function("classic")["faasvisor"]["mode"], "stdio")
        r = self.daemon.invoke("classic", b"classic body", timeout=scaled(60))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["body"], "classic body")
        self.assertEqual(r.json()["env"]["Http_Method"], "POST")

    def test_image_env_and_annotations(self):
        # envVars override the image's watchdog environment; the annotation overrides both.
        self.deploy_image("classic-as-http", self.http_image, envVars={"upstream_url": "http://127.0.0.1:5001"},
                          annotations={"faasvisor.backend": self.BACKEND, "faasvisor.port": "5000"})
        self.assertEqual(self.daemon.function("classic-as-http")["faasvisor"]["port"], 5000)
        self.deploy_image("env-port", self.http_image, envVars={"upstream_url": "http://127.0.0.1:5001"})
        self.assertEqual(self.daemon.function("env-port")["faasvisor"]["port"], 5001)
        r = self.daemon.request("POST", "/system/functions", {
            "service": "bad-wd-mode", "image": self.http_image, "envVars": {"mode": "static"},
            "annotations": {"faasvisor.backend": self.BACKEND}})
        self.assertJsonError(r, 400, "of-watchdog mode 'static'")
        # faasvisor.mode protocol: the image's command (the watchdog) runs, and fails to boot.
        self.deploy_image("as-protocol", self.classic_image,
                          annotations={"faasvisor.backend": self.BACKEND, "faasvisor.mode": "protocol"})
        self.assertEqual(self.daemon.function("as-protocol")["faasvisor"]["mode"], "protocol")
        self.assertEqual(self.daemon.invoke("as-protocol", b"x", timeout=scaled(60)).status, 502)


def backend_test(runtime, binary):
    @unittest.skipUnless(os.path.exists(binary), runtime + " is not installed")
    class Tests(ImageModeChecks, DaemonTestCase):
        BACKEND = runtime
    Tests.__name__ = Tests.__qualname__ = runtime.capitalize() + "ModeTests"
    return Tests


CrunModeTests = backend_test("crun", "/usr/bin/crun")
RuncModeTests = backend_test("runc", "/usr/bin/runc")
GvisorModeTests = backend_test("gvisor", "/usr/bin/runsc")

VM_BUILD = os.environ.get("FAASVISOR_IMAGE_BUILD", BUILD)
MODES_INITRAMFS = os.path.join(VM_BUILD, "vm", "modes.initramfs")
VM_KERNEL = os.path.join(VM_BUILD, "vm", "vmlinux")


@unittest.skipUnless(shutil.which("qemu-system-x86_64") and os.path.exists(MODES_INITRAMFS),
                     "QEMU or the modes initramfs (a static build) is missing")
class MicrovmModeTests(DaemonTestCase):
    """http and stdio in a Linux microVM: vminit runs faasvisor-adapter from the initramfs
    (with httpecho and stdcat, static: no interpreter in the guest); the guest's loopback is
    up for the adapter's HTTP. TCG, so one boot per function."""
    FLAGS = ("--stem-pool", "0", "--stop-grace-ms", "1000", "--accel=tcg", "--vm-kernel", VM_KERNEL)

    @classmethod
    def setUpClass(cls):
        subprocess.run([os.path.join(ROOT, "tools", "vmkernel"), "--build", VM_BUILD], check=True,
                       stdout=subprocess.DEVNULL)
        super().setUpClass()

    def deploy(self, name, mode, command, expect=202, image=MODES_INITRAMFS):
        r = self.daemon.request("POST", "/system/functions", {
            "service": name, "image": image, "envProcess": command, "limits": {"memory": "128Mi"},
            "annotations": {"faasvisor.backend": "microvm", "faasvisor.mode": mode}})
        self.assertEqual(r.status, expect, r)
        return r

    def test_http_in_a_microvm(self):
        self.deploy("vm-http", "http", "/httpecho 8080")
        r = self.daemon.invoke("vm-http", b"through the guest", path="/p", timeout=scaled(120))
        self.assertEqual((r.status, r.body, r.header("X-Seen-Path")), (200, b"through the guest", "/p"), r)
        warm = self.daemon.invoke("vm-http", b"again", timeout=scaled(60))
        self.assertEqual((warm.body, warm.header("X-Faasvisor-Start")), (b"again", "warm"))

    def test_stdio_in_a_microvm(self):
        self.deploy("vm-stdio", "stdio", "/stdcat")
        r = self.daemon.invoke("vm-stdio", b"body", path="/q", timeout=scaled(120))
        self.assertEqual((r.status, r.body), (200, b"body\nPOST /q\n"), r)
        failed = self.daemon.invoke("vm-stdio", b"x", query="exit=4", timeout=scaled(60))
        self.assertEqual(failed.status, 500, failed)
        self.assertTrue(failed.body.startswith(b"exit status 4\n"), failed.body)

    def test_image_without_the_adapter_is_400(self):
        r = self.daemon.request("POST", "/system/functions", {
            "service": "vm-noadapter", "image": os.path.join(VM_BUILD, "vm", "echo.initramfs"), "envProcess": "/echo",
            "annotations": {"faasvisor.backend": "microvm", "faasvisor.mode": "stdio"}})
        self.assertJsonError(r, 400, "faasvisor-adapter")


if __name__ == "__main__":
    unittest.main()
