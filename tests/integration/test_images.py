"""OCI images on the container backends: a function's image is an OCI layout (a directory or
a tar of one), unpacked at deploy time by faasvisor-unpack into the node's content-addressed
cache (--image-cache), shared by every function on the same image.

Covers: cold and warm answers from a layout dir and from a tar; one unpack for two functions;
layer order, whiteouts and opaque directories as seen from inside the container; the image's
Entrypoint/Cmd/Env/WorkingDir and the deployment's envProcess/envVars overriding them; the
same answers from the process backend and from the image (echo, hash, pyecho); and the 400s
at deploy time for a missing, corrupt, hostile or entrypoint-less image.

Images are built by tools/mkimage --oci (echo.oci, hash.oci, pyecho.oci) and, for the layer
tests, by tools/mkoci's functions entry by entry.
"""

import hashlib
import importlib.machinery
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest

from harness import (BUILD, ECHO_IMAGE, HASH_IMAGE, PYECHO_IMAGE, PYECHO_PROCESS, ROOT, Daemon, DaemonTestCase,
                     parallel, raw_request, scaled, wait_until)

IMAGE_BUILD = os.environ.get("FAASVISOR_IMAGE_BUILD", BUILD)
IMAGES = os.path.join(IMAGE_BUILD, "images")
mkoci = importlib.machinery.SourceFileLoader("mkoci", os.path.join(ROOT, "tools", "mkoci")).load_module()

RUNTIME_ENTRYPOINT = ["/usr/bin/python3", "-S", "/opt/faasvisor/faasvisor_runtime.py"]

# A handler that reports what the container sees: files, a directory's listing, env, cwd.
INSPECT_PY = b'''
import json, os

def handle(req):
    q = json.loads(req.body)
    out = {"exists": {p: os.path.lexists(p) for p in q.get("exists", [])},
           "read": {p: open(p).read() for p in q.get("read", [])},
           "list": {p: sorted(os.listdir(p)) for p in q.get("list", [])},
           "env": {k: os.environ.get(k) for k in q.get("env", [])},
           "cwd": os.getcwd()}
    return out
'''
OTHER_PY = b'''
def handle(req):
    return b"other:" + req.body
'''


def build_oci_images():
    if all(os.path.exists(os.path.join(IMAGES, n + ".oci", "index.json")) for n in ("echo", "hash", "pyecho")):
        return
    subprocess.run([os.path.join(ROOT, "tools", "mkimage"), "--oci", IMAGE_BUILD], check=True,
                   stdout=subprocess.DEVNULL)


def blob_path(layout, digest):
    return os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1])


def read_manifest(layout):
    with open(os.path.join(layout, "index.json")) as f:
        digest = json.load(f)["manifests"][0]["digest"]
    with open(blob_path(layout, digest)) as f:
        return json.load(f)


class ImageCacheTestCase(DaemonTestCase):
    """A daemon whose image cache is a fresh directory, removed with the class."""
    CACHE = None
    WORK = None

    @classmethod
    def setUpClass(cls):
        cls.CACHE = tempfile.mkdtemp(prefix="fv-image-cache-")
        cls.WORK = tempfile.mkdtemp(prefix="fv-image-work-")
        cls.FLAGS = ("--stem-pool", "0", "--stop-grace-ms", "1000", "--image-cache", cls.CACHE)
        build_oci_images()
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            shutil.rmtree(cls.CACHE, ignore_errors=True)
            shutil.rmtree(cls.WORK, ignore_errors=True)


@unittest.skipUnless(shutil.which("crun") and os.path.exists("/usr/bin/nsenter"), "crun is not installed")
class ImageTests(ImageCacheTestCase):
    BACKEND = "crun"
    python_layer = None

    # helpers

    def spec(self, name, image, **extra):
        spec = {"service": name, "image": image, "annotations": {"faasvisor.backend": self.BACKEND}}
        spec.update(extra)
        return spec

    def deploy(self, spec, expect=202):
        r = self.daemon.request("POST", "/system/functions", spec)
        self.assertEqual(r.status, expect, r.body)
        return r.json()

    def refused(self, image, *words, **extra):
        r = self.daemon.request("POST", "/system/functions", self.spec("refused", image, **extra))
        self.assertEqual(r.status, 400, r.body)
        message = r.json()["error"]
        for w in words:
            self.assertIn(w, message)
        self.assertIsNone(self.daemon.function("refused"))
        self.assertEqual(os.listdir(os.path.join(self.CACHE, "tmp")), [], "unpacker left work behind")
        return message

    def layout(self, name, layers, as_tar=False, **config):
        out = os.path.join(self.WORK, name + (".tar" if as_tar else ""))
        digest = mkoci.write_layout(out, layers, as_tar=as_tar, **config)
        return out, digest

    @classmethod
    def base_python_layer(cls):
        if cls.python_layer is None:
            cls.python_layer = mkoci.layer_from_dir(os.path.join(IMAGES, "pyecho.layers", "python"))
        return cls.python_layer

    def handler_layer(self):
        return mkoci.layer_from_entries([
            mkoci.entry("opt/faasvisor/faasvisor_runtime.py",
                        data=open(os.path.join(ROOT, "runtimes", "python", "faasvisor_runtime.py"), "rb").read()),
            mkoci.entry("function", "dir"),
            mkoci.entry("function/inspect.py", data=INSPECT_PY),
            mkoci.entry("function/other.py", data=OTHER_PY)])

    def inspect(self, name, query):
        r = self.daemon.invoke(name, json.dumps(query).encode())
        self.assertEqual(r.status, 200, r.body)
        return r.json()

    # tests

    def test_layout_dir_cold_then_warm(self):
        answer = self.deploy(self.spec("oci-echo", os.path.join(IMAGES, "echo.oci")))
        image = answer["image"]
        self.assertTrue(image["rootfs"].startswith(self.CACHE + "/sha256/"), image)
        self.assertEqual(image["digest"], json.load(open(os.path.join(IMAGES, "echo.oci", "index.json")))
                         ["manifests"][0]["digest"])
        cold = self.daemon.invoke("oci-echo", b"first")
        self.assertEqual((cold.status, cold.body, cold.header("X-Faasvisor-Start")), (200, b"first", "cold"))
        warm = self.daemon.invoke("oci-echo", b"second")
        self.assertEqual((warm.status, warm.body, warm.header("X-Faasvisor-Start")), (200, b"second", "warm"))
        info = self.daemon.function("oci-echo")
        self.assertEqual(info["faasvisor"]["imageDigest"], image["digest"])
        self.assertEqual(info["image"], os.path.join(IMAGES, "echo.oci"))
        # An update (PUT) resolves the image again (from the cache) and replaces the instances.
        r = self.daemon.request("PUT", "/system/functions", self.spec("oci-echo", os.path.join(IMAGES, "echo.oci"),
                                                                       envVars={"V": "2"}))
        self.assertEqual(r.status, 202, r.body)
        self.assertEqual(r.json()["image"]["unpacked"], False)
        self.assertEqual(self.daemon.function("oci-echo")["faasvisor"]["generation"], 2)
        self.assertEqual(self.daemon.invoke("oci-echo", b"third").body, b"third")

    def test_layout_tar_shares_the_cache(self):
        layers = [mkoci.layer_from_dir(os.path.join(IMAGES, "echo", "rootfs"))]
        tar, digest = self.layout("echo-tar", layers, as_tar=True, entrypoint=["/echo"])
        first = self.deploy(self.spec("tar-echo", tar))["image"]
        self.assertEqual(first["digest"], digest)
        r = self.daemon.invoke("tar-echo", b"from a tar")
        self.assertEqual((r.status, r.body), (200, b"from a tar"))
        # The same image as a directory: found in the cache, same rootfs.
        same, digest2 = self.layout("echo-dir", layers, entrypoint=["/echo"])
        self.assertEqual(digest2, digest)
        second = self.deploy(self.spec("dir-echo", same))["image"]
        self.assertEqual((second["unpacked"], second["rootfs"]), (False, first["rootfs"]))
        self.assertEqual(self.daemon.invoke("dir-echo", b"x").body, b"x")

    def test_two_functions_one_unpack(self):
        noise = os.urandom(32)  # a digest no other test (or earlier run) has unpacked
        layers = [mkoci.layer_from_dir(os.path.join(IMAGES, "echo", "rootfs")),
                  mkoci.layer_from_entries([mkoci.entry("noise", data=noise)])]
        path, digest = self.layout("twice", layers, entrypoint=["/echo"])
        before = self.daemon.get("/system/info").json()["faasvisor"]["images"]
        a = self.deploy(self.spec("once-a", path))["image"]
        b = self.deploy(self.spec("once-b", path))["image"]
        self.assertEqual((a["unpacked"], b["unpacked"]), (True, False))
        after = self.daemon.get("/system/info").json()["faasvisor"]["images"]
        self.assertEqual(after["cache"], self.CACHE)
        self.assertEqual((after["resolved"] - before["resolved"], after["unpacked"] - before["unpacked"]), (2, 1))
        self.assertEqual(after["unpacking"], 0)
        self.assertEqual(a["rootfs"], b["rootfs"])
        with open(os.path.join(a["rootfs"], "noise"), "rb") as f:
            self.assertEqual(f.read(), noise)
        for name in ("once-a", "once-b"):
            self.assertEqual(self.daemon.invoke(name, name.encode()).body, name.encode())
        self.assertIn(digest.split(":")[1], os.listdir(os.path.join(self.CACHE, "sha256")))

    def test_layers_whiteouts_and_config_inside(self):
        lower = mkoci.layer_from_entries([
            mkoci.entry("data", "dir"),
            mkoci.entry("data/a", data=b"a from layer 1"),
            mkoci.entry("data/b", data=b"b from layer 1"),
            mkoci.entry("data/kept", data=b"kept"),
            mkoci.entry("data/d", "dir"),
            mkoci.entry("data/d/x", data=b"x"),
            mkoci.entry("data/d/y", data=b"y"),
            mkoci.entry("data/gone", "dir"),
            mkoci.entry("data/gone/deep", data=b"deep")])
        upper = mkoci.layer_from_entries([
            mkoci.entry("data/.wh.a"),                  # delete a file
            mkoci.entry("data/.wh.gone"),               # delete a directory tree
            mkoci.entry("data/b", data=b"b from layer 2"),
            mkoci.entry("data/d/z", data=b"z"),         # written before the opaque marker...
            mkoci.entry("data/d/.wh..wh..opq"),         # ...which hides only x and y
            mkoci.entry("data/link", "symlink", target="/data/kept")])
        path, _ = self.layout("layered", [self.base_python_layer(), lower, upper, self.handler_layer()],
                              entrypoint=RUNTIME_ENTRYPOINT, cmd=["inspect"],
                              env=["PATH=/usr/bin:/bin", "FROM_IMAGE=yes", "OVERRIDE=image"], workdir="/function")
        self.deploy(self.spec("layered", path, envVars={"OVERRIDE": "deployment"}))
        seen = self.inspect("layered", {
            "exists": ["/data/a", "/data/gone", "/data/kept", "/data/.wh.a", "/data/d/.wh..wh..opq"],
            "read": ["/data/b", "/data/link"], "list": ["/data/d"],
            "env": ["FROM_IMAGE", "OVERRIDE"]})
        self.assertEqual(seen["exists"], {"/data/a": False, "/data/gone": False, "/data/kept": True,
                                          "/data/.wh.a": False, "/data/d/.wh..wh..opq": False})
        self.assertEqual(seen["read"], {"/data/b": "b from layer 2", "/data/link": "kept"})
        self.assertEqual(seen["list"], {"/data/d": ["z"]})
        self.assertEqual(seen["env"], {"FROM_IMAGE": "yes", "OVERRIDE": "deployment"})
        self.assertEqual(seen["cwd"], "/function")
        # envProcess replaces Entrypoint + Cmd; a bare name is looked up in the image's PATH.
        self.deploy(self.spec("layered-other", path,
                              envProcess="python3 -S /opt/faasvisor/faasvisor_runtime.py other"))
        r = self.daemon.invoke("layered-other", b"hi")
        self.assertEqual((r.status, r.body), (200, b"other:hi"))

    def fresh_pyecho(self, name):
        """The pyecho image plus a layer of noise: a digest never unpacked before, and an
        unpack long enough (tens of ms) for requests to arrive while it runs."""
        base = os.path.join(IMAGES, "pyecho.layers")
        layers = [self.base_python_layer(), mkoci.layer_from_dir(os.path.join(base, "function")),
                  mkoci.layer_from_entries([mkoci.entry("noise", data=os.urandom(16))])]
        return self.layout(name, layers, entrypoint=RUNTIME_ENTRYPOINT, cmd=["handler"], workdir="/function",
                           env=["PATH=/usr/bin:/bin"])[0]

    def test_concurrent_deploys_of_one_image(self):
        path = self.fresh_pyecho("concurrent")
        names = ["conc-%d" % i for i in range(4)]
        results = parallel(lambda n: self.daemon.request("POST", "/system/functions", self.spec(n, path)),
                           [(n,) for n in names])
        rootfs = set()
        for r in results:
            self.assertNotIsInstance(r, BaseException)
            self.assertEqual(r.status, 202, r.body)
            rootfs.add(r.json()["image"]["rootfs"])
        self.assertEqual(len(rootfs), 1, rootfs)
        self.assertEqual(os.listdir(os.path.join(self.CACHE, "tmp")), [])
        for n in names:
            self.assertEqual(self.daemon.invoke(n, n.encode()).body, n.encode())

    def test_client_leaves_during_unpack(self):
        """A client that half-closes (FIN) after its deploy is answered, as for any request: the
        deploy happens. One that resets the connection (RST) abandons it: the function is not
        deployed, and the helper's work is kept in the cache all the same."""
        for how in ("fin", "rst"):
            name = "left-" + how
            path = self.fresh_pyecho("client-" + how)
            s = self.daemon.raw_socket()
            if how == "rst":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.sendall(raw_request("POST", "/system/functions", json.dumps(self.spec(name, path))))
            if how == "fin":
                s.shutdown(socket.SHUT_WR)
                self.assertRegex(s.recv(65536), rb"^HTTP/1.1 202 ")
            s.close()
            wait_until(lambda: any(path + " is sha256:" in line for line in self.daemon.log_text(last=400).splitlines()),
                       scaled(30), "the helper to finish")
            self.assertTrue(self.daemon.healthy())
            if how == "fin":
                self.assertIsNotNone(self.daemon.function(name))
                continue
            self.assertIsNone(self.daemon.function(name))
            again = self.deploy(self.spec(name, path))["image"]
            self.assertFalse(again["unpacked"])

    def fresh_echo(self, name):
        """An echo image no other test has unpacked (a cached image's source blobs are not
        read again: the manifest's digest already names their content)."""
        layers = [mkoci.layer_from_dir(os.path.join(IMAGES, "echo", "rootfs")),
                  mkoci.layer_from_entries([mkoci.entry("noise", data=os.urandom(16))])]
        return self.layout(name, layers, entrypoint=["/echo"])[0]

    def test_missing_image_400(self):
        self.refused(os.path.join(self.WORK, "no-such-image"), "does not exist")
        broken = self.fresh_echo("missing-blob")
        os.unlink(blob_path(broken, read_manifest(broken)["layers"][1]["digest"]))
        self.refused(broken, "layer 2 of 2", "missing")
        no_index = self.fresh_echo("missing-index")
        os.unlink(os.path.join(no_index, "index.json"))
        self.refused(no_index, "index.json")

    def test_corrupt_blobs_400(self):
        for which in ("layer", "config", "manifest"):
            broken = self.fresh_echo("corrupt-" + which)
            m = read_manifest(broken)
            if which == "manifest":
                with open(os.path.join(broken, "index.json")) as f:
                    digest = json.load(f)["manifests"][0]["digest"]
            else:
                digest = (m["layers"][0] if which == "layer" else m["config"])["digest"]
            p = blob_path(broken, digest)
            data = bytearray(open(p, "rb").read())
            data[len(data) // 2] ^= 0x01
            with open(p, "wb") as f:
                f.write(data)
            self.refused(broken, digest, "corrupt")
        garbage = os.path.join(self.WORK, "garbage.tar")
        with open(garbage, "wb") as f:
            f.write(os.urandom(4096))
        self.refused(garbage, "not a tar archive")

    def test_no_entrypoint_400(self):
        layers = [mkoci.layer_from_dir(os.path.join(IMAGES, "echo", "rootfs"))]
        path, _ = self.layout("no-entrypoint", layers)
        self.refused(path, "no runnable entrypoint")
        path, _ = self.layout("bad-entrypoint", layers, entrypoint=["/not-there"])
        self.refused(path, "/not-there")
        self.refused(os.path.join(IMAGES, "echo.oci"), "/nope", envProcess="/nope")

    @unittest.skipUnless(shutil.which("umoci"), "umoci is not installed (tools/setup installs it)")
    def test_umoci_made_image(self):
        """A layout written by another tool: umoci's layers (its own whiteout for a deleted
        file) and config, as an OCI user would bring them."""
        layout = os.path.join(self.WORK, "umoci")
        bundle = os.path.join(self.WORK, "umoci-bundle")
        run = lambda *a: subprocess.run(["umoci"] + list(a), check=True, stdout=subprocess.DEVNULL)  # noqa: E731
        run("init", "--layout", layout)
        run("new", "--image", layout + ":latest")
        run("unpack", "--image", layout + ":latest", bundle)
        rootfs = os.path.join(bundle, "rootfs")
        shutil.copy2(os.path.join(IMAGES, "echo", "rootfs", "echo"), rootfs)
        os.makedirs(os.path.join(rootfs, "etc"))
        with open(os.path.join(rootfs, "etc", "doomed"), "w") as f:
            f.write("in layer 1 only")
        run("repack", "--image", layout + ":latest", bundle)
        os.unlink(os.path.join(rootfs, "etc", "doomed"))
        run("repack", "--image", layout + ":latest", bundle)
        run("config", "--image", layout + ":latest", "--config.entrypoint", "/echo")
        image = self.deploy(self.spec("umoci-echo", layout))["image"]
        self.assertTrue(os.path.isdir(os.path.join(image["rootfs"], "etc")))
        self.assertFalse(os.path.lexists(os.path.join(image["rootfs"], "etc", "doomed")))
        r = self.daemon.invoke("umoci-echo", b"made by umoci")
        self.assertEqual((r.status, r.body), (200, b"made by umoci"))

    def test_oversized_config_400(self):
        layers = [mkoci.layer_from_dir(os.path.join(IMAGES, "echo", "rootfs"))]
        many, _ = self.layout("many-env", layers, entrypoint=["/echo"], env=["V%d=1" % i for i in range(2000)])
        self.refused(many, "too many strings")
        big, _ = self.layout("big-env", layers, entrypoint=["/echo"], env=["V%d=%s" % (i, "x" * 1000) for i in range(100)])
        self.refused(big, "more than 60 KiB")

    def test_oci_image_on_process_backend_400(self):
        r = self.daemon.request("POST", "/system/functions",
                                {"service": "oci-process", "image": os.path.join(IMAGES, "echo.oci")})
        self.assertEqual(r.status, 400, r.body)
        self.assertIn("container backend", r.json()["error"])

    def test_hostile_layers_refused(self):
        canary = tempfile.mkdtemp(prefix="fv-image-canary-")
        try:
            cases = {
                "dotdot": ([mkoci.entry("../../../../../.." + canary + "/dotdot", data=b"x")], "'..'"),
                "absolute": ([mkoci.entry(canary + "/absolute", data=b"x")], "absolute"),
                "abs-symlink": ([mkoci.entry("esc", "symlink", target=canary),
                                 mkoci.entry("esc/through-abs", data=b"x")], "leaves the image root"),
                "rel-symlink": ([mkoci.entry("a", "dir"),
                                 mkoci.entry("a/up", "symlink", target="../../../../../../.." + canary),
                                 mkoci.entry("a/up/through-rel", data=b"x")], "leaves the image root"),
                "whiteout-through-symlink": ([mkoci.entry("esc", "symlink", target=canary),
                                              mkoci.entry("esc/.wh.victim")], "leaves the image root"),
                "hardlink-dotdot": ([mkoci.entry("hl", "hardlink", target="../../../../../../etc/passwd")],
                                    "outside the image root"),
                "hardlink-abs": ([mkoci.entry("hl", "hardlink", target="/etc/passwd")], "outside the image root"),
                "hardlink-through-symlink": ([mkoci.entry("esc", "symlink", target="/etc"),
                                             mkoci.entry("hl", "hardlink", target="esc/passwd")],
                                            "leaves the image root"),
            }
            with open(os.path.join(canary, "victim"), "w") as f:
                f.write("still here")
            base = mkoci.layer_from_dir(os.path.join(IMAGES, "echo", "rootfs"))
            for name, (entries, words) in cases.items():
                with self.subTest(name):
                    path, digest = self.layout("hostile-" + name, [base, mkoci.layer_from_entries(entries)],
                                               entrypoint=["/echo"])
                    message = self.refused(path, "layer 2 of 2", words)
                    self.assertIn("refused", message)
                    self.assertNotIn(digest.split(":")[1], os.listdir(os.path.join(self.CACHE, "sha256")))
            self.assertEqual(sorted(os.listdir(canary)), ["victim"])
            with open(os.path.join(canary, "victim")) as f:
                self.assertEqual(f.read(), "still here")
        finally:
            shutil.rmtree(canary)


def container_backends():
    """The container runtimes installed here (crun needs nsenter on hybrid cgroup hosts)."""
    out = []
    if shutil.which("crun") and os.path.exists("/usr/bin/nsenter"):
        out.append("crun")
    if shutil.which("runc"):
        out.append("runc")
    if shutil.which("runsc"):
        out.append("gvisor")
    return out


@unittest.skipUnless(container_backends(), "no OCI runtime is installed")
class ParityTests(ImageCacheTestCase):
    """One source, the same answers: echo, hash and pyecho on the process backend (from their
    build or source directories) and from their OCI images on every installed runtime."""

    def test_same_answers_everywhere(self):
        d = self.daemon
        d.deploy("echo-process", image=ECHO_IMAGE, process="./echo")
        d.deploy("hash-process", image=HASH_IMAGE, process="./hash")
        d.deploy("pyecho-process", image=PYECHO_IMAGE, process=PYECHO_PROCESS, memory="128Mi")
        backends = container_backends()
        for backend in backends:
            for name in ("echo", "hash", "pyecho"):
                r = d.request("POST", "/system/functions", {
                    "service": "%s-%s" % (name, backend), "image": os.path.join(IMAGES, name + ".oci"),
                    "annotations": {"faasvisor.backend": backend}, "limits": {"memory": "128Mi"}})
                self.assertEqual(r.status, 202, r.body)
        body = os.urandom(3000)
        cases = [("echo", body, {}, ""), ("echo", b"", {}, ""),
                 ("hash", body, {}, "rounds=1"), ("hash", b"abc", {}, "rounds=50"), ("hash", b"x", {}, "rounds=0"),
                 ("pyecho", b"from python", {"Content-Type": "text/x-py"}, ""),
                 ("pyecho", bytes(range(256)), {"Content-Type": "application/octet-stream"}, "")]
        for name, payload, headers, query in cases:
            want = d.invoke(name + "-process", payload, headers=headers, query=query)
            self.assertIn(want.status, (200, 400), want.body)
            for backend in backends:
                with self.subTest(name=name, backend=backend, query=query):
                    got = d.invoke("%s-%s" % (name, backend), payload, headers=headers, query=query)
                    self.assertEqual((got.status, got.body, got.header("Content-Type")),
                                     (want.status, want.body, want.header("Content-Type")))
        self.assertIn(hashlib.sha256(body).hexdigest().encode(),
                      d.invoke("hash-" + backends[0], body, query="rounds=1").body)


@unittest.skipUnless(shutil.which("crun") and os.path.exists("/usr/bin/nsenter"), "crun is not installed")
class ShutdownDuringUnpackTest(unittest.TestCase):
    def test_sigterm_while_unpacking(self):
        """A deploy waiting for its image gets a 503 when the node stops; the helper is
        killed and reaped, nothing leaks (the harness's checks)."""
        build_oci_images()
        cache = tempfile.mkdtemp(prefix="fv-image-cache-")
        try:
            d = Daemon("--stem-pool", "0", "--image-cache", cache).start()
            s = d.raw_socket()
            s.sendall(raw_request("POST", "/system/functions", json.dumps(
                {"service": "stopped", "image": os.path.join(IMAGES, "pyecho.oci"),
                 "annotations": {"faasvisor.backend": "crun"}})))
            wait_until(lambda: "unpacking image" in d.log_text(), scaled(10), "the helper to start")
            d.proc.send_signal(signal.SIGTERM)
            answer = s.recv(65536)
            s.close()
            problems = d.finish()
            self.assertEqual(problems, [])
            # Either the helper was killed (503) or it had just finished (202): never a hang.
            self.assertRegex(answer, rb"^HTTP/1.1 (503|202) ")
            # A killed helper leaves its work directory; the next helper removes it (once it
            # is a second old and unlocked).
            time.sleep(1.5)
            subprocess.run([os.path.join(BUILD, "src", "faasvisor-unpack"), cache, os.path.join(IMAGES, "echo.oci")],
                           check=True, stdout=subprocess.DEVNULL)
            self.assertEqual(os.listdir(os.path.join(cache, "tmp")), [])
        finally:
            shutil.rmtree(cache, ignore_errors=True)
