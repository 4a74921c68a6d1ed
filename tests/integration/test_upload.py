"""Image upload (docs/images.md): POST /system/images takes an OCI image layout as a tar body,
streamed to an image helper's stdin as it arrives (Content-Length or chunked), unpacked into
the content-addressed cache with every digest checked; {"digest": ...} comes back and a
deploy may name "image": "sha256:...". GET lists the cache with each image's users, DELETE
removes an unused one (409 while a function uses it). Behind basic auth: an unauthenticated
upload is refused before its body is taken."""

import importlib.machinery
import io
import json
import os
import shutil
import tarfile
import tempfile
import unittest

from harness import BUILD, ROOT, BasicAuth, Daemon, DaemonTestCase, scaled, wait_until

IMAGES = os.path.join(os.environ.get("FAASVISOR_IMAGE_BUILD", BUILD), "images")
mkoci = importlib.machinery.SourceFileLoader("mkoci", os.path.join(ROOT, "tools", "mkoci")).load_module()


def blob(layout, digest):
    return os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1])


@unittest.skipUnless(os.path.exists("/usr/bin/crun"), "crun is not installed")
class UploadTests(DaemonTestCase):
    AUTH = None

    @classmethod
    def setUpClass(cls):
        cls.WORK = tempfile.mkdtemp(prefix="fv-upload-")
        cls.CACHE = os.path.join(cls.WORK, "cache")
        cls.AUTH = BasicAuth()
        cls.FLAGS = ("--stem-pool", "0", "--stop-grace-ms", "1000", "--image-cache", cls.CACHE,
                     "--max-image-bytes", "8Mi", "--image-cache-max", "4Mi")
        echo_layer = mkoci.layer_from_dir(os.path.join(IMAGES, "echo", "rootfs"))
        cls.echo_tar = os.path.join(cls.WORK, "echo.tar")
        cls.echo_digest = mkoci.write_layout(cls.echo_tar, [echo_layer], entrypoint=["/echo"], as_tar=True)
        # Near the limit, so the body takes many receives: 6 MiB of incompressible noise.
        cls.big_tar = os.path.join(cls.WORK, "big.tar")
        cls.big_digest = mkoci.write_layout(cls.big_tar, [echo_layer, mkoci.layer_from_entries(
            [mkoci.entry("noise", data=os.urandom(6 << 20))])], entrypoint=["/echo"], as_tar=True)
        cls.daemon = Daemon(*cls.FLAGS, auth=cls.AUTH).start()

    def setUp(self):
        if type(self).daemon is None or type(self).daemon.proc is None:
            type(self).daemon = Daemon(*self.FLAGS, auth=self.AUTH).start()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.AUTH.remove()
            shutil.rmtree(cls.WORK, ignore_errors=True)

    def upload(self, data, chunked=False, headers=None, expect=200):
        return self.upload_to(self.daemon, data, chunked, headers, expect)

    def upload_to(self, daemon, data, chunked=False, headers=None, expect=200):
        conn = daemon.connect(scaled(60))
        try:
            h = {"Authorization": self.AUTH.header(), "Content-Type": "application/x-tar"}
            h.update(headers or {})
            h = {k: v for k, v in h.items() if v is not None}
            if chunked:
                pieces = (data[i:i + 100_000] for i in range(0, len(data), 100_000))
                conn.request("POST", "/system/images", body=pieces, headers=h, encode_chunked=True)
            else:
                conn.request("POST", "/system/images", body=data, headers=h)
            r = conn.getresponse()
            body = r.read()
        finally:
            conn.close()
        self.assertEqual(r.status, expect, body)
        # An abandoned upload's helper stops at once: its work dir goes within moments.
        wait_until(lambda: os.listdir(os.path.join(self.CACHE, "tmp")) == [], scaled(10), "the upload's work dir to go")
        return json.loads(body)

    def deploy(self, name, image, expect=202):
        r = self.daemon.request("POST", "/system/functions", {
            "service": name, "image": image, "annotations": {"faasvisor.backend": "crun"}})
        self.assertEqual(r.status, expect, r)
        return r

    def images(self):
        r = self.daemon.get("/system/images")
        self.assertEqual(r.status, 200, r)
        return {i["digest"]: i for i in r.json()}

    def test_upload_deploy_list_delete(self):
        answer = self.upload(open(self.echo_tar, "rb").read())
        self.assertEqual(answer["digest"], self.echo_digest)
        self.assertTrue(answer["rootfs"].startswith(self.CACHE + "/sha256/"), answer)
        # The same image again: found in the cache.
        self.assertEqual(self.upload(open(self.echo_tar, "rb").read(), chunked=True)["unpacked"], False)
        self.deploy("up-echo", self.echo_digest)
        r = self.daemon.invoke("up-echo", b"uploaded", timeout=scaled(60))
        self.assertEqual((r.status, r.body), (200, b"uploaded"), r)
        self.assertEqual(self.daemon.function("up-echo")["faasvisor"]["imageDigest"], self.echo_digest)
        self.assertEqual(self.images()[self.echo_digest]["usedBy"], ["up-echo"])
        r = self.daemon.request("DELETE", "/system/images/" + self.echo_digest)
        self.assertJsonError(r, 409, "up-echo")
        self.assertEqual(self.daemon.invoke("up-echo", b"still").body, b"still")
        self.daemon.request("DELETE", "/system/functions", {"functionName": "up-echo"})
        r = self.daemon.request("DELETE", "/system/images/" + self.echo_digest)
        self.assertEqual(r.status, 200, r)
        self.assertNotIn(self.echo_digest, self.images())
        self.assertFalse(os.path.exists(answer["rootfs"]))
        self.assertEqual(os.listdir(os.path.join(self.CACHE, "tmp")), [])
        r = self.daemon.request("POST", "/system/functions", {
            "service": "gone", "image": self.echo_digest, "annotations": {"faasvisor.backend": "crun"}})
        self.assertJsonError(r, 400, "not in this node's image cache")
        self.assertJsonError(self.daemon.request("DELETE", "/system/images/" + self.echo_digest), 404)
        self.assertJsonError(self.daemon.request("DELETE", "/system/images/sha256:abc"), 400)

    def test_large_upload_streams_both_ways(self):
        data = open(self.big_tar, "rb").read()
        self.assertGreater(len(data), 6 << 20)  # past the 6 MiB body limit of every other route
        self.assertEqual(self.upload(data)["digest"], self.big_digest)
        self.assertEqual(self.upload(data, chunked=True)["digest"], self.big_digest)
        self.deploy("up-big", self.big_digest)
        self.assertEqual(self.daemon.invoke("up-big", b"big", timeout=scaled(60)).body, b"big")
        self.daemon.request("DELETE", "/system/functions", {"functionName": "up-big"})

    def test_unused_images_are_evicted_past_the_cache_max(self):
        # --image-cache-max 4Mi: the big image (6 MiB of file data) alone is past it.
        big = self.upload(open(self.big_tar, "rb").read())["digest"]
        self.deploy("keep-big", big)
        echo = self.upload(open(self.echo_tar, "rb").read())["digest"]
        self.assertEqual(set(self.images()) & {big, echo}, {big, echo}, "in use, and just added: both kept")
        self.daemon.request("DELETE", "/system/functions", {"functionName": "keep-big"})
        # The next image helper run evicts the least recently used unused image.
        self.assertEqual(self.upload(open(self.echo_tar, "rb").read())["digest"], echo)
        listed = self.images()
        self.assertNotIn(big, listed)
        self.assertIn(echo, listed)
        self.assertEqual(os.listdir(os.path.join(self.CACHE, "tmp")), [])

    def test_a_function_on_an_uploaded_image_comes_back_after_a_restart(self):
        state = tempfile.mkdtemp(prefix="fv-upload-state-", dir=self.WORK)
        flags = ("--stem-pool", "0", "--stop-grace-ms", "1000", "--image-cache", self.CACHE, "--state-dir", state)
        d = Daemon(*flags, auth=self.AUTH).start()
        try:
            digest = self.upload_to(d, open(self.echo_tar, "rb").read())["digest"]
            r = d.request("POST", "/system/functions", {"service": "kept", "image": digest,
                                                         "annotations": {"faasvisor.backend": "crun"}})
            self.assertEqual(r.status, 202, r)
        finally:
            problems = d.stop(settle=False)  # the function stays: it is what the restart must find
        self.assertEqual(problems, [])
        d2 = Daemon(*flags, auth=self.AUTH).start()
        try:
            r = d2.invoke("kept", b"after the restart", timeout=scaled(60))
            self.assertEqual((r.status, r.body), (200, b"after the restart"), r)
            self.assertEqual(d2.function("kept")["image"], digest)
            d2.request("DELETE", "/system/functions", {"functionName": "kept"})
        finally:
            problems = d2.stop()
        self.assertEqual(problems, [])

    def test_bad_uploads(self):
        error = self.upload(b"not a tar at all" * 1000, expect=400)["error"]
        self.assertIn("upload", error)
        self.assertNotIn(self.CACHE, error)  # no temp path of the node's
        # A layout whose layer does not match its digest.
        layout = os.path.join(self.WORK, "corrupt")
        # A layer of its own: an image already in the cache (same manifest digest) is not read again.
        mkoci.write_layout(layout, [mkoci.layer_from_dir(os.path.join(IMAGES, "echo", "rootfs")),
                                    mkoci.layer_from_entries([mkoci.entry("noise", data=os.urandom(4096))])],
                           entrypoint=["/echo"])
        manifest = json.load(open(blob(layout, json.load(open(os.path.join(layout, "index.json")))["manifests"][0]["digest"])))
        layer = blob(layout, manifest["layers"][0]["digest"])
        data = bytearray(open(layer, "rb").read())
        data[len(data) // 2] ^= 0xFF
        open(layer, "wb").write(bytes(data))
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            for name in ("oci-layout", "index.json", "blobs"):
                tar.add(os.path.join(layout, name), arcname=name)
        self.assertIn("corrupt", self.upload(out.getvalue(), expect=400)["error"])
        # Past --max-image-bytes (8 MiB): refused up front with a Content-Length, as it grows
        # when chunked.
        for framing in ("Content-Length: %d\r\n\r\n" % (9 << 20),
                        "Transfer-Encoding: chunked\r\n\r\n%x\r\n" % (9 << 20)):
            sock = self.daemon.raw_socket(scaled(30))
            sock.sendall(("POST /system/images HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n%s"
                          % (self.AUTH.header(), framing)).encode())
            answer = sock.recv(4096)
            sock.close()
            self.assertTrue(answer.startswith(b"HTTP/1.1 413"), answer)
        # Over the limit as it grows: the helper never keeps more than the limit either.
        self.upload(os.urandom(9 << 20)[: (8 << 20) + 1], chunked=True, expect=413)
        r = self.daemon.request("POST", "/system/images", b"")
        self.assertJsonError(r, 400, "tar body")
        # No credentials: 401, and the body is never streamed to a helper.
        conn = self.daemon.connect(scaled(30))
        conn.request("POST", "/system/images", body=b"x" * 1000)
        r = conn.getresponse()
        self.assertEqual(r.status, 401)
        r.read()
        conn.close()
        # The node still takes a good one.
        self.assertEqual(self.upload(open(self.echo_tar, "rb").read())["digest"], self.echo_digest)


if __name__ == "__main__":
    unittest.main()
