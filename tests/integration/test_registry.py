"""Registry images (docs/images.md): "image": "REGISTRY/NAME:TAG" or "...@sha256:..." is pulled
at deploy time by the image helper (skopeo) into the node's content-addressed cache and
deployed once it is there, or refused with a 400 naming the registry's answer.

Debian's docker-registry runs on loopback, four times: plain HTTP (--insecure-registry),
TLS with basic auth whose credentials are in --registry-auth, TLS with auth and no
credentials, and TLS whose self-signed certificate is verified (and fails). Images are pushed
with skopeo from the layouts tools/mkimage --oci builds; a manifest list (an OCI index whose
first entry is linux/arm64) resolves to its linux/amd64 image."""

import base64
import crypt
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import ssl
import unittest
import urllib.error
import urllib.request

from harness import BUILD, ROOT, DaemonTestCase, scaled, wait_until
from test_modes import build_watchdog_images  # a function only: test_modes' classes do not run twice

IMAGES = os.path.join(os.environ.get("FAASVISOR_IMAGE_BUILD", BUILD), "images")
REGISTRY = shutil.which("docker-registry")
SKOPEO = shutil.which("skopeo")
HAVE_CRUN = os.path.exists("/usr/bin/crun")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_oci_images():
    if not all(os.path.exists(os.path.join(IMAGES, n + ".oci", "index.json")) for n in ("echo", "hash", "pyecho")):
        subprocess.run([os.path.join(ROOT, "tools", "mkimage"), "--oci", os.path.dirname(IMAGES)],
                       check=True, stdout=subprocess.DEVNULL)


class Registry:
    """One docker-registry process on 127.0.0.1, storage in a temp dir."""

    def __init__(self, work, name, tls=False, users=None):
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        self.port = free_port()
        self.host = "127.0.0.1:%d" % self.port
        self.tls = tls
        config = ["version: 0.1", "log:", "  level: error", "storage:", "  filesystem:",
                  "    rootdirectory: " + os.path.join(self.dir, "data"), "http:",
                  "  addr: " + self.host, "  secret: test-secret"]
        if tls:
            cert, key = os.path.join(self.dir, "cert.pem"), os.path.join(self.dir, "key.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                            "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                           check=True, capture_output=True)
            config += ["  tls:", "    certificate: " + cert, "    key: " + key]
        if users:
            htpasswd = os.path.join(self.dir, "htpasswd")
            with open(htpasswd, "w") as f:
                for user, password in users.items():
                    f.write("%s:%s\n" % (user, crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))))
            config += ["auth:", "  htpasswd:", "    realm: faasvisor-test", "    path: " + htpasswd]
        with open(os.path.join(self.dir, "config.yml"), "w") as f:
            f.write("\n".join(config) + "\n")
        self.proc = subprocess.Popen([REGISTRY, "serve", os.path.join(self.dir, "config.yml")],
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "log"), "w"))
        context = ssl._create_unverified_context()

        def up():
            try:
                urllib.request.urlopen("%s://%s/v2/" % ("https" if tls else "http", self.host), timeout=1,
                                       context=context if tls else None)
                return True
            except urllib.error.HTTPError:
                return True  # 401: up, and asking for credentials
            except OSError:
                return False
        wait_until(up, scaled(15), "docker-registry on " + self.host)

    def push(self, layout, name, all_images=False, creds=None):
        cmd = [SKOPEO, "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"]
        if all_images:
            cmd.append("--all")
        if creds:
            cmd += ["--dest-creds", creds]
        subprocess.run(cmd + ["oci:" + layout, "docker://%s/%s" % (self.host, name)], check=True)

    def digest(self, name, creds=None):
        cmd = [SKOPEO, "inspect", "--tls-verify=false"] + (["--creds", creds] if creds else [])
        out = subprocess.run(cmd + ["docker://%s/%s" % (self.host, name)], check=True, capture_output=True)
        return json.loads(out.stdout)["Digest"]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def manifest_list_layout(out):
    """An OCI layout holding one image index: hash as linux/arm64 first, echo as linux/amd64."""
    os.makedirs(os.path.join(out, "blobs", "sha256"))
    entries = []
    for name, arch in (("hash", "arm64"), ("echo", "amd64")):
        layout = os.path.join(IMAGES, name + ".oci")
        for blob in os.listdir(os.path.join(layout, "blobs", "sha256")):
            shutil.copyfile(os.path.join(layout, "blobs", "sha256", blob), os.path.join(out, "blobs", "sha256", blob))
        d = json.load(open(os.path.join(layout, "index.json")))["manifests"][0]
        entries.append({"mediaType": d["mediaType"], "digest": d["digest"], "size": d["size"],
                        "platform": {"os": "linux", "architecture": arch}})
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": entries}).encode()
    digest = hashlib.sha256(index).hexdigest()
    with open(os.path.join(out, "blobs", "sha256", digest), "wb") as f:
        f.write(index)
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
                                                      "digest": "sha256:" + digest, "size": len(index)}]}, f)
    shutil.copyfile(os.path.join(IMAGES, "echo.oci", "oci-layout"), os.path.join(out, "oci-layout"))
    return out


@unittest.skipUnless(REGISTRY and SKOPEO and HAVE_CRUN, "docker-registry, skopeo or crun is not installed")
class RegistryTests(DaemonTestCase):
    WORK = None
    registries = {}

    @classmethod
    def setUpClass(cls):
        build_oci_images()
        cls.WORK = tempfile.mkdtemp(prefix="fv-registry-")
        cls.CACHE = os.path.join(cls.WORK, "cache")
        try:
            cls.registries = {
                "plain": Registry(cls.WORK, "plain"),
                "auth": Registry(cls.WORK, "auth", tls=True, users={"alice": "s3cret"}),
                "nocreds": Registry(cls.WORK, "nocreds", tls=True, users={"bob": "other"}),
                "verified": Registry(cls.WORK, "verified", tls=True),
            }
            r = cls.registries
            r["plain"].push(os.path.join(IMAGES, "pyecho.oci"), "fn/pyecho:v1")
            r["plain"].push(os.path.join(IMAGES, "echo.oci"), "fn/echo:v1")
            r["plain"].push(manifest_list_layout(os.path.join(cls.WORK, "multi")), "fn/multi:v1", all_images=True)
            # What `faas-cli build` of the python3-http template would push (test_modes builds it).
            python3_http, _ = build_watchdog_images(os.path.join(cls.WORK, "templates"))
            r["plain"].push(python3_http, "fn/py3http:latest")
            r["auth"].push(os.path.join(IMAGES, "echo.oci"), "private/echo:v1", creds="alice:s3cret")
            r["nocreds"].push(os.path.join(IMAGES, "echo.oci"), "private/echo:v1", creds="bob:other")
            r["verified"].push(os.path.join(IMAGES, "echo.oci"), "fn/echo:v1")
            auth = os.path.join(cls.WORK, "config.json")
            with open(auth, "w") as f:
                json.dump({"auths": {r["auth"].host: {"auth": base64.b64encode(b"alice:s3cret").decode()}}}, f)
            os.chmod(auth, 0o600)
            cls.FLAGS = ("--stem-pool", "0", "--stop-grace-ms", "1000", "--image-cache", cls.CACHE,
                         "--registry-auth", auth, "--insecure-registry", r["plain"].host,
                         "--insecure-registry", r["auth"].host, "--insecure-registry", r["nocreds"].host)
            super().setUpClass()
        except BaseException:
            cls.cleanup()
            raise

    @classmethod
    def cleanup(cls):
        for reg in cls.registries.values():
            reg.stop()
        shutil.rmtree(cls.WORK, ignore_errors=True)

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.cleanup()

    def deploy(self, name, image, expect=202, backend="crun"):
        r = self.daemon.request("POST", "/system/functions", {
            "service": name, "image": image, "annotations": {"faasvisor.backend": backend},
            "limits": {"memory": "128Mi"}}, timeout=scaled(120))
        self.assertEqual(r.status, expect, r)
        self.assertEqual(os.listdir(os.path.join(self.CACHE, "tmp")), [], "the pull left work behind")
        return r.json()

    def refused(self, image, *words, backend="crun"):
        r = self.daemon.request("POST", "/system/functions", {
            "service": "refused", "image": image, "annotations": {"faasvisor.backend": backend}}, timeout=scaled(120))
        message = self.assertJsonError(r, 400, list(words))
        self.assertIsNone(self.daemon.function("refused"))
        return message

    def test_pull_by_tag_then_by_digest(self):
        plain = self.registries["plain"]
        ref = plain.host + "/fn/pyecho:v1"
        first = self.deploy("reg-pyecho", ref)["image"]
        self.assertTrue(first["rootfs"].startswith(self.CACHE + "/sha256/"), first)
        r = self.daemon.invoke("reg-pyecho", b"from the registry", timeout=scaled(60))
        self.assertEqual((r.status, r.body), (200, b"from the registry"), r)
        info = self.daemon.function("reg-pyecho")
        self.assertEqual(info["image"], ref)
        # By digest: the same manifest, found in the cache once pulled.
        pinned = plain.host + "/fn/pyecho@" + plain.digest("fn/pyecho:v1")
        second = self.deploy("reg-pinned", pinned)["image"]
        self.assertEqual((second["digest"], second["rootfs"], second["unpacked"]),
                         (first["digest"], first["rootfs"], False))
        self.assertEqual(self.daemon.invoke("reg-pinned", b"pinned").body, b"pinned")
        # A tag and a digest: the digest decides.
        both = self.deploy("reg-both", plain.host + "/fn/pyecho:whatever@" + plain.digest("fn/pyecho:v1"))["image"]
        self.assertEqual(both["digest"], first["digest"])

    def test_faas_cli_stack_deploy_of_a_template_image(self):
        # `faas-cli deploy -f stack.yml` with `image: HOST/fn/py3http:latest` built from the
        # python3-http template: PUT, 404, then POST of the FunctionDeployment, no envProcess,
        # only the backend as an annotation (stack.yml's annotations:). It runs as built.
        spec = {"service": "stack-fn", "image": self.registries["plain"].host + "/fn/py3http:latest",
                "labels": {"com.openfaas.scale.max": "2"}, "annotations": {"faasvisor.backend": "crun"},
                "limits": {"memory": "256Mi"}}
        headers = {"Content-Type": "application/json", "User-Agent": "faas-cli/0.16.38"}
        r = self.daemon.request("PUT", "/system/functions", json.dumps(spec), headers)
        self.assertEqual(r.status, 404, r)
        r = self.daemon.request("POST", "/system/functions", json.dumps(spec), headers, timeout=scaled(120))
        self.assertEqual(r.status, 202, r)
        info = self.daemon.function("stack-fn")
        self.assertEqual((info["image"], info["faasvisor"]["mode"], info["faasvisor"]["port"]),
                         (spec["image"], "http", 5000))
        r = self.daemon.invoke("stack-fn", b"from the stack", timeout=scaled(60))
        self.assertEqual((r.status, r.body), (201, b"python3-http:from the stack"), r)
        # The rolling update faas-cli does on the next deploy: PUT, pulled again, new generation.
        r = self.daemon.request("PUT", "/system/functions", json.dumps(spec), headers, timeout=scaled(120))
        self.assertEqual(r.status, 202, r)
        self.assertEqual(self.daemon.function("stack-fn")["faasvisor"]["generation"], 2)
        self.assertEqual(self.daemon.invoke("stack-fn", b"v2", timeout=scaled(60)).body, b"python3-http:v2")

    def test_manifest_list_resolves_to_linux_amd64(self):
        self.deploy("reg-multi", self.registries["plain"].host + "/fn/multi:v1")
        r = self.daemon.invoke("reg-multi", b"amd64 is echo", timeout=scaled(60))
        self.assertEqual((r.status, r.body), (200, b"amd64 is echo"), r)  # hash (arm64) would answer a digest

    def test_credentials_from_registry_auth(self):
        self.deploy("reg-private", self.registries["auth"].host + "/private/echo:v1")
        self.assertEqual(self.daemon.invoke("reg-private", b"authorised", timeout=scaled(60)).body, b"authorised")
        # A registry the config.json has no credentials for: its own answer, as a 400.
        self.refused(self.registries["nocreds"].host + "/private/echo:v1", "unauthorized")

    def test_info_shows_the_registry_settings(self):
        images = self.daemon.get("/system/info").json()["faasvisor"]["images"]
        self.assertEqual(images["registry_auth"], True)
        self.assertEqual(set(images["insecure_registries"]),
                         {self.registries[n].host for n in ("plain", "auth", "nocreds")})

    def test_tls_is_verified_unless_insecure(self):
        self.refused(self.registries["verified"].host + "/fn/echo:v1", "x509")

    def test_registry_answers_are_400s(self):
        plain = self.registries["plain"]
        self.refused(plain.host + "/fn/echo:nope", "manifest unknown", "fn/echo:nope")
        self.refused(plain.host + "/fn/echo@sha256:" + "0" * 64, "manifest unknown")
        self.refused(plain.host + "/fn/absent:v1", "manifest unknown", "fn/absent")
        self.refused("127.0.0.1:%d/fn/echo:v1" % free_port(), "connection refused")
        self.refused("127.0.0.1:1/Bad//name", "not a registry image reference")
        self.refused(plain.host + "/fn/echo@sha256:short", "digest")
        # A registry image runs on a container backend only.
        self.refused(plain.host + "/fn/echo:v1", "container backend", backend="process")
        # The node still pulls afterwards.
        self.deploy("reg-after", plain.host + "/fn/echo:v1")
        self.assertEqual(self.daemon.invoke("reg-after", b"ok", timeout=scaled(60)).body, b"ok")


if __name__ == "__main__":
    unittest.main()
