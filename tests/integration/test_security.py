"""The node's API security (docs/security.md): HTTP basic auth as OpenFaaS does it, the
refusal to listen beyond loopback without credentials, and image roots."""

import base64
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import (DAEMON, ECHO_IMAGE, BasicAuth, Daemon, DaemonTestCase, deploy_spec, scaled)


def basic(user, password):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


class BasicAuthTests(DaemonTestCase):
    AUTH = BasicAuth()
    FLAGS = ("--stem-pool", "2")

    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon(*cls.FLAGS, auth=cls.AUTH).start()
        cls.daemon.deploy("echo")

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.AUTH.remove()

    def setUp(self):
        if type(self).daemon is None or type(self).daemon.proc is None:
            type(self).daemon = Daemon(*self.FLAGS, auth=self.AUTH).start()
            type(self).daemon.deploy("echo")

    def assert_challenged(self, r):
        self.assertJsonError(r, 401)
        self.assertEqual(r.header("WWW-Authenticate"), 'Basic realm="Restricted"', r)

    def test_system_routes_need_credentials(self):
        d = self.daemon
        routes = [("GET", "/system/functions", None), ("GET", "/system/info", None),
                  ("GET", "/system/function/echo", None), ("GET", "/system/stats", None),
                  ("DELETE", "/system/stats", None), ("GET", "/system/logs?name=echo", None),
                  ("POST", "/system/functions", deploy_spec("intruder")),
                  ("PUT", "/system/functions", deploy_spec("echo")),
                  ("DELETE", "/system/functions", {"functionName": "echo"}),
                  ("POST", "/system/scale-function/echo", {"serviceName": "echo", "replicas": 3}),
                  ("GET", "/system/no-such-route", None)]
        for method, path, body in routes:
            for auth in (None, basic("admin", "wrong"), basic("root", self.AUTH.password),
                         basic("admin", self.AUTH.password + "x"), "Basic !!!notbase64",
                         "Bearer " + self.AUTH.password):
                with self.subTest(method=method, path=path, auth=auth):
                    r = d.request(method, path, body, headers={"Authorization": auth})
                    self.assert_challenged(r)
        # Nothing of that took effect.
        self.assertEqual([f["name"] for f in d.get("/system/functions").json()], ["echo"])

    def test_right_credentials_are_accepted_whatever_the_scheme_case(self):
        d = self.daemon
        self.assertEqual(d.get("/system/info").status, 200)  # the harness sends them
        r = d.get("/system/functions", headers={"Authorization": basic("admin", self.AUTH.password).replace("Basic", "basic")})
        self.assertEqual(r.status, 200, r)

    def test_functions_healthz_and_metrics_stay_open(self):
        d = self.daemon
        for method, path in (("POST", "/function/echo"), ("GET", "/healthz"), ("GET", "/metrics")):
            with self.subTest(path=path):
                r = d.request(method, path, b"hi", headers={"Authorization": None})
                self.assertEqual(r.status, 200, r)

    def test_protected_metrics(self):
        d = Daemon("--stem-pool", "0", "--protect-metrics", auth=self.AUTH).start()
        try:
            self.assert_challenged(d.get("/metrics", headers={"Authorization": None}))
            self.assertEqual(d.get("/metrics").status, 200)
            self.assertEqual(d.get("/healthz", headers={"Authorization": None}).status, 200)
        finally:
            self.assertEqual(d.stop(), [])


def run_daemon(*flags, timeout=10):
    """Starts faasvisord expecting it to refuse to start; (exit code, stderr)."""
    p = subprocess.run([DAEMON, "--accel=tcg", "--stem-pool", "0"] + list(flags),
                       capture_output=True, text=True, timeout=scaled(timeout))
    return p.returncode, p.stderr


class StartupRefusalTests(unittest.TestCase):
    def test_no_public_listen_without_credentials(self):
        code, err = run_daemon("--listen", "0.0.0.0:0")
        self.assertNotEqual(code, 0)
        self.assertIn("not a loopback address", err)
        self.assertIn("--insecure-no-auth", err)

    def test_public_listen_with_insecure_no_auth_or_credentials(self):
        for extra in (["--insecure-no-auth"], None):
            auth = None
            flags = ["--listen", "0.0.0.0:0"]
            if extra is None:
                auth = BasicAuth()
            else:
                flags += extra
            d = Daemon(*flags, auth=auth)  # after the harness's --listen 127.0.0.1:0: ours wins
            try:
                d.start()
                self.assertTrue(d.healthy())
                self.assertEqual(d.stop(), [])
            finally:
                if auth:
                    auth.remove()

    def test_bad_credential_files(self):
        empty = tempfile.mkdtemp(prefix="fv-auth-empty-")
        try:
            code, err = run_daemon("--listen", "127.0.0.1:0", "--basic-auth-dir", empty)
            self.assertNotEqual(code, 0)
            self.assertIn("basic-auth-user", err)
            for name in ("basic-auth-user", "basic-auth-password"):
                with open(os.path.join(empty, name), "w") as f:
                    f.write(" \n")
            code, err = run_daemon("--listen", "127.0.0.1:0", "--basic-auth-dir", empty)
            self.assertNotEqual(code, 0)
            self.assertIn("empty", err)
        finally:
            shutil.rmtree(empty)

    def test_bad_image_root(self):
        code, err = run_daemon("--listen", "127.0.0.1:0", "--image-root", "/nonexistent-root")
        self.assertNotEqual(code, 0)
        self.assertIn("--image-root", err)


class ImageRootTests(DaemonTestCase):
    FLAGS = ("--stem-pool", "2")

    @classmethod
    def setUpClass(cls):
        cls.scratch = tempfile.mkdtemp(prefix="fv-roots-", dir="/var/tmp")
        cls.root = os.path.join(cls.scratch, "root")
        os.makedirs(cls.root)
        shutil.copytree(ECHO_IMAGE, os.path.join(cls.root, "echo"))
        os.symlink("/etc", os.path.join(cls.root, "etc-link"))
        os.symlink(ECHO_IMAGE, os.path.join(cls.root, "echo-outside"))  # a root may not link out
        outside = os.path.join(cls.scratch, "outside")
        shutil.copytree(ECHO_IMAGE, outside)
        cls.outside = outside
        cls.daemon = Daemon(*cls.FLAGS, image_roots=(cls.root,)).start()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            shutil.rmtree(cls.scratch, ignore_errors=True)

    def setUp(self):
        if type(self).daemon is None or type(self).daemon.proc is None:
            type(self).daemon = Daemon(*self.FLAGS, image_roots=(self.root,)).start()

    def test_paths_outside_the_roots_are_403_naming_the_roots(self):
        for image in ("/", "/etc", "/nonexistent", self.outside, self.root + "/../outside",
                      self.root + "/etc-link", self.root + "/echo-outside",
                      self.root + "/echo/../../outside", ECHO_IMAGE):
            with self.subTest(image=image):
                r = self.daemon.request("POST", "/system/functions", deploy_spec("x", image=image))
                msg = self.assertJsonError(r, 403, ["'image'", self.root])
                self.assertNotIn("does not exist", msg)  # no oracle for which paths exist

    def test_paths_inside_a_root_deploy_and_run(self):
        d = self.daemon
        d.deploy("inside", image=os.path.join(self.root, "echo"))
        d.deploy("inside-dots", image=self.root + "/echo/../echo")
        for name in ("inside", "inside-dots"):
            r = d.invoke(name, b"hi")
            self.assertEqual((r.status, r.body), (200, b"hi"), r)
        # An update is checked the same way.
        r = d.request("PUT", "/system/functions", deploy_spec("inside", image="/etc"))
        self.assertJsonError(r, 403, "'image'")

    def test_program_of_a_process_function_must_be_in_its_directory_a_root_or_the_system(self):
        d = self.daemon
        image = os.path.join(self.root, "echo")
        for process in (self.outside + "/echo", "../../outside/echo", self.root + "/etc-link/../" + self.outside):
            with self.subTest(process=process):
                r = d.request("POST", "/system/functions", deploy_spec("p", image=image, process=process))
                self.assertJsonError(r, 403, "'envProcess'")
        r = d.request("POST", "/system/functions", deploy_spec("p", image=image, process="no-such-tool-xyz"))
        self.assertJsonError(r, 400, "'envProcess'")
        # A system program and a program in the function's directory are fine.
        d.deploy("sys-prog", image=image, process="/bin/cat")
        d.deploy("bare-prog", image=image, process="cat")
        d.deploy("own-prog", image=image, process="./echo")


class NoImageRootTests(DaemonTestCase):
    """Without --image-root no host path is accepted."""

    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon("--stem-pool", "0", image_roots=()).start()

    def setUp(self):
        if type(self).daemon is None or type(self).daemon.proc is None:
            type(self).daemon = Daemon("--stem-pool", "0", image_roots=()).start()

    def test_every_host_path_is_refused(self):
        r = self.daemon.request("POST", "/system/functions", deploy_spec("x"))
        self.assertJsonError(r, 403, "no --image-root is configured")


if __name__ == "__main__":
    unittest.main()
