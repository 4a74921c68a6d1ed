"""Secrets (docs/secrets.md): /system/secrets in faas-provider's shapes and errors, a
function's "secrets" read from inside its instances on every backend (process, crun, runc,
gVisor, microVM, unikernel), a restart that keeps them, and values that never leak into the
daemon's log, /system/functions, /metrics or an error message.

Instances run tests/functions/secrets.c: ?name=NAME answers with fv_secret(NAME) (the file
/var/openfaas/secrets/NAME on Linux, the SECRETS frame in a unikernel); ?mode=stat&name=NAME
describes the file as the function sees it (mode, owner, whether it can be written).
"""

import base64
import json
import os
import shutil
import stat
import subprocess
import tempfile
import unittest

from harness import BUILD, ROOT, Daemon, DaemonTestCase, scaled

IMAGE_BUILD = os.environ.get("FAASVISOR_IMAGE_BUILD", BUILD)
SECRETS_DIR = os.path.join(BUILD, "tests", "functions")  # the secrets binary, as a process image
ROOTFS = os.path.join(IMAGE_BUILD, "images", "secrets", "rootfs")
INITRAMFS = os.path.join(IMAGE_BUILD, "vm", "secrets.initramfs")
KERNEL = os.path.join(IMAGE_BUILD, "vm", "vmlinux")
UNIKERNEL = os.path.join(os.environ.get("FAASVISOR_UNIKERNEL_DIR", os.path.join(IMAGE_BUILD, "unikernel")),
                         "secrets.uk")
QEMU = shutil.which("qemu-system-x86_64")

# Distinctive, so a grep for it finds only a leak.
VALUE = "fv-s3cr3t-7f1c9a-do-not-leak"
NOBODY = 65534


def process_spec(name, secrets, **extra):
    spec = {"service": name, "image": SECRETS_DIR, "envProcess": "./secrets", "secrets": secrets}
    spec.update(extra)
    return spec


def container_spec(name, backend, secrets):
    return {"service": name, "image": ROOTFS, "envProcess": "/secrets", "secrets": secrets,
            "annotations": {"faasvisor.backend": backend}}


def build_secrets_image():
    if not os.path.isdir(os.path.join(ROOTFS, "var", "openfaas", "secrets")):
        subprocess.run([os.path.join(ROOT, "tools", "mkimage"), IMAGE_BUILD], check=True,
                       stdout=subprocess.DEVNULL)


class SecretsCase(DaemonTestCase):
    """Helpers shared by every class."""

    def create(self, name, value=VALUE, expect=202, raw=False):
        body = {"name": name}
        if raw:
            body["rawValue"] = base64.b64encode(value).decode()
        else:
            body["value"] = value
        r = self.daemon.request("POST", "/system/secrets", body)
        self.assertEqual(r.status, expect, r.body)
        return r

    def delete_secret(self, name, expect=202):
        r = self.daemon.request("DELETE", "/system/secrets", {"name": name})
        self.assertEqual(r.status, expect, r.body)
        return r

    def deploy(self, spec, expect=202):
        r = self.daemon.request("POST", "/system/functions", spec)
        self.assertEqual(r.status, expect, r.body)
        return r

    def remove_function(self, name):
        r = self.daemon.request("DELETE", "/system/functions", {"functionName": name})
        self.assertEqual(r.status, 202, r.body)

    def read(self, function, secret, timeout=None):
        r = self.daemon.invoke(function, query="name=" + secret, timeout=timeout)
        self.assertEqual(r.status, 200, r.body)
        return r.body

    def file_facts(self, function, secret):
        r = self.daemon.invoke(function, query="mode=stat&name=" + secret)
        self.assertEqual(r.status, 200, r.body)
        return r.json()

    def assert_read_only_file(self, facts, uid, names):
        self.assertEqual(facts["mode"], "0400", facts)
        self.assertEqual(facts["uid"], uid, facts)
        self.assertEqual(facts["size"], len(VALUE), facts)
        self.assertNotEqual(facts["open_write"], "ok", facts)
        self.assertIn(facts["create"], ("EROFS", "EACCES", "EPERM"), facts)
        self.assertEqual(sorted(facts["list"]), sorted(names), facts)


class SecretsApiTests(SecretsCase):
    FLAGS = ("--stem-pool", "2")

    def test_create_list_update_delete(self):
        self.create("api-key")
        r = self.daemon.get("/system/secrets")
        self.assertEqual(r.status, 200)
        self.assertIn({"name": "api-key", "namespace": "openfaas-fn"}, r.json())
        self.assertNotIn(VALUE.encode(), r.body)
        self.assertJsonError(self.create("api-key", expect=409), 409, "already exists")
        r = self.daemon.request("PUT", "/system/secrets", {"name": "api-key", "value": "v2"})
        self.assertEqual(r.status, 202, r.body)
        r = self.daemon.request("PUT", "/system/secrets", {"name": "nope", "value": "v"})
        self.assertJsonError(r, 404, "'nope' not found")
        self.assertJsonError(self.delete_secret("nope", expect=404), 404, "'nope' not found")
        self.delete_secret("api-key")
        names = [s["name"] for s in self.daemon.get("/system/secrets").json()]
        self.assertNotIn("api-key", names)
        self.create("api-key")  # gone for good: a new one may take the name
        self.delete_secret("api-key")

    def test_bad_requests_are_400_and_never_quote_the_value(self):
        cases = [
            ({"name": "../etc", "value": VALUE}, "'name'"),
            ({"name": "a/b", "value": VALUE}, "'name'"),
            ({"name": ".hidden", "value": VALUE}, "'name'"),
            ({"name": "n" * 201, "value": VALUE}, "'name'"),
            ({"name": "ok", "value": VALUE + "x" * (512 * 1024)}, "more than the limit"),
            ({"name": "ok", "value": VALUE, "rawValue": "eA=="}, "not both"),
            ({"name": "ok", "rawValue": VALUE + "!"}, "'rawValue'"),
            ({"name": "ok"}, "'value'"),
            ({"value": VALUE}, "'name'"),
            ({"name": "ok", "value": VALUE, "namespace": "elsewhere"}, "'namespace'"),
        ]
        for body, needle in cases:
            for method in ("POST", "PUT"):
                r = self.daemon.request(method, "/system/secrets", body)
                self.assertJsonError(r, 400, needle)
                self.assertNotIn(VALUE.encode(), r.body)
        self.assertJsonError(self.daemon.request("POST", "/system/secrets", "{not json"), 400, "invalid JSON")
        r = self.daemon.request("PATCH", "/system/secrets", {"name": "x"})
        self.assertEqual(r.status, 405)
        self.assertEqual(r.header("Allow"), "GET, POST, PUT, DELETE")
        # The largest value allowed is accepted.
        self.create("biggest", "v" * (512 * 1024))
        self.delete_secret("biggest")

    def test_deploy_naming_an_unknown_secret_is_400(self):
        r = self.daemon.request("POST", "/system/functions", process_spec("needs-unknown", ["missing"]))
        self.assertJsonError(r, 400, ["'secrets'", "'missing'"])
        r = self.daemon.request("POST", "/system/functions", process_spec("bad-name", ["../x"]))
        self.assertJsonError(r, 400, "'secrets'")
        self.create("twice")
        r = self.daemon.request("POST", "/system/functions", process_spec("twice-fn", ["twice", "twice"]))
        self.assertJsonError(r, 400, "twice")
        self.deploy(process_spec("update-me", []))
        r = self.daemon.request("PUT", "/system/functions", process_spec("update-me", ["missing"]))
        self.assertJsonError(r, 400, "'missing'")
        self.remove_function("update-me")
        self.delete_secret("twice")

    def test_deleting_a_secret_in_use_is_409_naming_the_functions(self):
        self.create("shared")
        self.deploy(process_spec("user-one", ["shared"]))
        self.deploy(process_spec("user-two", ["shared"]))
        r = self.delete_secret("shared", expect=409)
        self.assertJsonError(r, 409, ["'user-one'", "'user-two'"])
        self.remove_function("user-one")
        self.remove_function("user-two")
        self.delete_secret("shared")

    def test_process_instance_reads_its_secrets_as_read_only_files(self):
        self.create("db-password")
        self.create("blob", b"\x00\x01\xfe\xff binary\n", raw=True)
        self.create("unused")
        self.deploy(process_spec("reader", ["db-password", "blob"]))
        self.assertEqual(self.read("reader", "db-password"), VALUE.encode())
        self.assertEqual(self.read("reader", "blob"), b"\x00\x01\xfe\xff binary\n")
        r = self.daemon.invoke("reader", query="name=unused")
        self.assertEqual(r.status, 404, r.body)  # not named by the function: not there
        self.assert_read_only_file(self.file_facts("reader", "db-password"), NOBODY, ["db-password", "blob"])
        # A function without secrets sees none.
        self.deploy(process_spec("no-secrets", []))
        r = self.daemon.invoke("no-secrets", query="name=db-password")
        self.assertEqual(r.status, 404, r.body)
        for fn in ("reader", "no-secrets"):
            self.remove_function(fn)
        for s in ("db-password", "blob", "unused"):
            self.delete_secret(s)

    def test_largest_secrets_reach_a_process_whole(self):
        # 8 x 512 KiB = 4 MiB, the most a function may have: the GO message outgrows a
        # pipe's default 64 KiB.
        names = ["big%d" % i for i in range(8)]
        for i, n in enumerate(names):
            self.create(n, chr(ord("a") + i) * (512 * 1024))
        self.deploy(process_spec("big-reader", names, limits={"memory": "64Mi"}))
        for i, n in enumerate(names):
            body = self.read("big-reader", n)
            self.assertEqual((len(body), body[:1], body[-1:]), (512 * 1024, bytes([ord("a") + i]), bytes([ord("a") + i])))
        self.create("one-more", "z")
        r = self.daemon.request("PUT", "/system/functions", process_spec("big-reader", names + ["one-more"]))
        self.assertJsonError(r, 400, "more than the limit")
        self.remove_function("big-reader")
        for n in names + ["one-more"]:
            self.delete_secret(n)

    def test_updated_value_reaches_new_instances(self):
        self.create("rotating", "old-value")
        self.deploy(process_spec("rotator", ["rotating"]))
        self.assertEqual(self.read("rotator", "rotating"), b"old-value")
        first = self.daemon.instances("rotator")
        r = self.daemon.request("PUT", "/system/secrets", {"name": "rotating", "value": "new-value"})
        self.assertEqual(r.status, 202, r.body)
        # The warm instance retired with the update; the next call starts one with the new value.
        r = self.daemon.invoke("rotator", query="name=rotating")
        self.assertEqual((r.status, r.body), (200, b"new-value"))
        self.assertEqual(r.header("X-Faasvisor-Start"), "cold")
        self.assertNotIn(int(r.header("X-Faasvisor-Instance")), [i["id"] for i in first])
        self.remove_function("rotator")
        self.delete_secret("rotating")

    def test_values_never_leak(self):
        self.create("leak-check")
        self.create("leak-raw", (VALUE + "-raw").encode(), raw=True)
        self.deploy(process_spec("leaky", ["leak-check", "leak-raw"]))
        self.assertEqual(self.read("leaky", "leak-check"), VALUE.encode())
        bodies = [self.daemon.get(p).body for p in
                  ("/system/functions", "/system/function/leaky", "/metrics", "/system/stats",
                   "/system/info", "/system/secrets", "/system/logs?name=leaky")]
        # Error paths that handle the secret: a duplicate, an in-use delete, a bad update.
        bodies.append(self.create("leak-check", expect=409).body)
        bodies.append(self.delete_secret("leak-check", expect=409).body)
        bodies.append(self.daemon.request("PUT", "/system/secrets",
                                          {"name": "leak-check", "value": VALUE, "rawValue": VALUE}).body)
        for body in bodies:
            self.assertNotIn(VALUE.encode(), body)
        self.assertIn(b'"secrets":["leak-check","leak-raw"]', self.daemon.get("/system/function/leaky").body)
        self.remove_function("leaky")
        self.delete_secret("leak-check")
        self.delete_secret("leak-raw")
        log = self.daemon.log_text(last=100000)
        self.assertIn("secret leak-check created", log)
        self.assertNotIn(VALUE, log)

    def test_stored_0600_in_the_state_dir(self):
        self.create("on-disk")
        state = self.daemon.own_state_dir
        path = os.path.join(state, "secret", "on-disk")
        st = os.stat(path)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(state).st_mode), 0o700)
        with open(path, "rb") as f:
            self.assertIn(VALUE.encode(), f.read())  # the store's record: header + raw value
        self.delete_secret("on-disk")
        self.assertFalse(os.path.exists(path))


class SecretsRestartTests(unittest.TestCase):
    def test_a_restarted_node_has_its_secrets(self):
        state = tempfile.mkdtemp(prefix="fv-state-secrets-")
        try:
            d = Daemon("--stem-pool", "1", "--state-dir", state).start()
            try:
                r = d.request("POST", "/system/secrets", {"name": "kept", "value": VALUE})
                self.assertEqual(r.status, 202, r.body)
                r = d.request("POST", "/system/secrets", {"name": "dropped", "value": "x"})
                self.assertEqual(r.status, 202, r.body)
                r = d.request("DELETE", "/system/secrets", {"name": "dropped"})
                self.assertEqual(r.status, 202, r.body)
                r = d.request("POST", "/system/functions", process_spec("kept-fn", ["kept"]))
                self.assertEqual(r.status, 202, r.body)
            finally:
                problems = d.stop(settle=False)
            self.assertEqual(problems, [])
            d = Daemon("--stem-pool", "1", "--state-dir", state).start()
            try:
                names = [s["name"] for s in d.get("/system/secrets").json()]
                self.assertEqual(names, ["kept"])
                # The function came back with its secrets, before the node answered.
                r = d.invoke("kept-fn", query="name=kept")
                self.assertEqual((r.status, r.body), (200, VALUE.encode()))
                self.assertEqual(d.request("DELETE", "/system/secrets", {"name": "kept"}).status, 409)
                r = d.request("POST", "/system/functions", process_spec("after-restart", ["kept"]))
                self.assertEqual(r.status, 202, r.body)
                r = d.invoke("after-restart", query="name=kept")
                self.assertEqual((r.status, r.body), (200, VALUE.encode()))
                d.request("DELETE", "/system/functions", {"functionName": "after-restart"})
                self.assertNotIn(VALUE, d.log_text(last=100000))
            finally:
                problems = d.stop()
            self.assertEqual(problems, [])
        finally:
            shutil.rmtree(state, ignore_errors=True)


class ContainerSecretsBase(SecretsCase):
    FLAGS = ("--stem-pool", "0", "--stop-grace-ms", "1000")
    BACKEND = None

    @classmethod
    def setUpClass(cls):
        if cls.BACKEND is None:
            raise unittest.SkipTest("the base of the per-runtime classes")
        super().setUpClass()

    @classmethod
    def prepare_daemon(cls):
        build_secrets_image()

    def test_container_reads_its_secrets_and_leaves_no_files(self):
        name = "secrets-" + self.BACKEND
        self.create("token")
        self.create("second", "two")
        self.deploy(container_spec(name, self.BACKEND, ["token", "second"]))
        self.assertEqual(self.read(name, "token", timeout=scaled(60)), VALUE.encode())
        self.assertEqual(self.read(name, "second"), b"two")
        self.assert_read_only_file(self.file_facts(name, "token"), NOBODY, ["token", "second"])
        bundles = "/run/faasvisor/node-%d/%s/bundles" % (self.daemon.pid, self.BACKEND)
        instance = "%s-%d" % (name, self.daemon.instances(name)[0]["id"])
        self.assertTrue(os.path.isdir(os.path.join(bundles, instance, "secrets")))
        self.remove_function(name)
        wait = __import__("harness").wait_until
        wait(lambda: not os.path.exists(os.path.join(bundles, instance)), scaled(20),
             "the bundle (and its secret files) of %s to be removed" % instance)
        self.delete_secret("token")
        self.delete_secret("second")

    def test_image_without_the_mount_point_is_400(self):
        self.create("orphan")
        image = os.path.join(IMAGE_BUILD, "images", "echo", "rootfs")
        if os.path.isdir(os.path.join(image, "var", "openfaas", "secrets")):
            image = tempfile.mkdtemp(prefix="fv-bare-rootfs-")
            self.addCleanup(shutil.rmtree, image, True)
            for d in ("proc", "dev", "tmp"):
                os.mkdir(os.path.join(image, d))
            shutil.copy(os.path.join(ROOTFS, "secrets"), image)
        spec = {"service": "no-mount-" + self.BACKEND, "image": image, "envProcess": "/secrets" if "bare" in image else "/echo",
                "secrets": ["orphan"], "annotations": {"faasvisor.backend": self.BACKEND}}
        r = self.daemon.request("POST", "/system/functions", spec)
        self.assertJsonError(r, 400, "/var/openfaas/secrets")
        self.delete_secret("orphan")


@unittest.skipUnless(shutil.which("crun") and os.path.exists("/usr/bin/unshare"), "crun is not installed")
class CrunSecretsTests(ContainerSecretsBase):
    BACKEND = "crun"


@unittest.skipUnless(shutil.which("runc"), "runc is not installed")
class RuncSecretsTests(ContainerSecretsBase):
    BACKEND = "runc"


@unittest.skipUnless(shutil.which("runsc"), "runsc (gVisor) is not installed")
class GvisorSecretsTests(ContainerSecretsBase):
    BACKEND = "gvisor"


@unittest.skipUnless(QEMU, "qemu-system-x86_64 is not installed (tools/setup installs qemu-system-x86)")
@unittest.skipUnless(os.path.exists(INITRAMFS), "no %s (the build makes it where functions link statically)" % INITRAMFS)
class MicrovmSecretsTests(SecretsCase):
    FLAGS = ("--stem-pool", "0", "--stop-grace-ms", "1000", "--accel=tcg", "--vm-kernel", KERNEL)

    @classmethod
    def setUpClass(cls):
        subprocess.run([os.path.join(ROOT, "tools", "vmkernel"), "--build", IMAGE_BUILD], check=True,
                       stdout=subprocess.DEVNULL)
        super().setUpClass()

    def test_microvm_reads_its_secrets_from_files(self):
        self.create("vm-key")
        self.create("vm-raw", b"\x00raw\xff", raw=True)
        self.deploy({"service": "secrets-vm", "image": INITRAMFS, "envProcess": "/secrets",
                     "secrets": ["vm-key", "vm-raw"], "limits": {"memory": "128Mi"},
                     "annotations": {"faasvisor.backend": "microvm"}})
        self.assertEqual(self.read("secrets-vm", "vm-key", timeout=scaled(90)), VALUE.encode())
        self.assertEqual(self.read("secrets-vm", "vm-raw"), b"\x00raw\xff")
        self.assert_read_only_file(self.file_facts("secrets-vm", "vm-key"), 0, ["vm-key", "vm-raw"])
        # Without secrets the guest mounts nothing there.
        self.deploy({"service": "plain-vm", "image": INITRAMFS, "envProcess": "/secrets",
                     "limits": {"memory": "128Mi"}, "annotations": {"faasvisor.backend": "microvm"}})
        r = self.daemon.invoke("plain-vm", query="name=vm-key", timeout=scaled(90))
        self.assertEqual(r.status, 404, r.body)
        for fn in ("secrets-vm", "plain-vm"):
            self.remove_function(fn)
        self.delete_secret("vm-key")
        self.delete_secret("vm-raw")
        self.assertNotIn(VALUE, self.daemon.log_text(last=100000))


@unittest.skipUnless(QEMU, "qemu-system-x86_64 is not installed (tools/setup installs qemu-system-x86)")
@unittest.skipUnless(os.path.exists(UNIKERNEL), "no %s (the unikernel kit builds it)" % UNIKERNEL)
class UnikernelSecretsTests(SecretsCase):
    FLAGS = ("--stem-pool", "0", "--stop-grace-ms", "1000", "--accel=tcg")

    def uk_spec(self, name, secrets):
        return {"service": name, "image": UNIKERNEL, "envProcess": "/secrets", "secrets": secrets,
                "limits": {"memory": "8Mi"}, "annotations": {"faasvisor.backend": "unikernel"}}

    def test_unikernel_reads_its_secrets_with_fv_secret(self):
        self.create("uk-key")
        self.create("uk-raw", b"\x00\x01uk\xff", raw=True)
        self.deploy(self.uk_spec("secrets-uk", ["uk-key", "uk-raw"]))
        # The first fv_secret call in handle() asks the node (GET_SECRETS during an invocation).
        self.assertEqual(self.read("secrets-uk", "uk-key", timeout=scaled(60)), VALUE.encode())
        self.assertEqual(self.read("secrets-uk", "uk-raw"), b"\x00\x01uk\xff")
        r = self.daemon.invoke("secrets-uk", query="name=other")
        self.assertEqual(r.status, 404, r.body)
        self.assertEqual(len(self.daemon.instances("secrets-uk")), 1)  # one instance served all
        # Rotated: the next instance asks again and gets the new value.
        r = self.daemon.request("PUT", "/system/secrets", {"name": "uk-key", "value": "rotated"})
        self.assertEqual(r.status, 202, r.body)
        self.assertEqual(self.read("secrets-uk", "uk-key", timeout=scaled(60)), b"rotated")
        self.deploy(self.uk_spec("plain-uk", []))
        r = self.daemon.invoke("plain-uk", query="name=uk-key", timeout=scaled(60))
        self.assertEqual(r.status, 404, r.body)
        for fn in ("secrets-uk", "plain-uk"):
            self.remove_function(fn)
        self.delete_secret("uk-key")
        self.delete_secret("uk-raw")
        self.assertNotIn(VALUE, self.daemon.log_text(last=100000))


if __name__ == "__main__":
    unittest.main()
