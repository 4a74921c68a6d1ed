"""The embedding API (docs/embedding.md): the embedder's test program, faasvisor-rig, and an
installed copy of the library built against with pkg-config."""

import glob
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from buildinfo import is_sanitized
from harness import BUILD, ECHO_IMAGE, ROOT, scaled

EMBED_TESTS = os.path.join(BUILD, "tests", "embed", "faasvisor-embed-tests")
RIG = os.path.join(BUILD, "examples", "rig", "faasvisor-rig")
RIG_LINE = re.compile(r"^(\d+) invocations/s p50 ([\d.]+) ms p90 ([\d.]+) ms p99 ([\d.]+) ms "
                      r"\((\d+) invocations, concurrency (\d+), [\d.]+ s, 0 errors\)$", re.M)


def node_cgroups_of(pid):
    """Cgroup directories named after a process's nodes (node-<pid>, node-<pid>-<n>)."""
    return (glob.glob("/sys/fs/cgroup/*/faasvisor/node-%d" % pid) + glob.glob("/sys/fs/cgroup/*/faasvisor/node-%d-*" % pid)
            + glob.glob("/sys/fs/cgroup/faasvisor/node-%d" % pid) + glob.glob("/sys/fs/cgroup/faasvisor/node-%d-*" % pid))


class EmbedTest(unittest.TestCase):
    def run_program(self, argv, timeout, env=None):
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            out, err = p.communicate(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            self.fail("%s did not finish in %d s:\n%s\n%s" % (argv[0], timeout, out[-3000:], err[-3000:]))
        # Each node removes its cgroup subtree when it is destroyed.
        self.assertEqual(node_cgroups_of(p.pid), [], "cgroups left by %s" % argv[0])
        return p.returncode, out, err

    def test_embedding_api_tests_pass(self):
        rc, out, err = self.run_program([EMBED_TESTS], 120)
        self.assertEqual(rc, 0, out[-4000:] + err[-4000:])
        self.assertIn("Status: SUCCESS", out)
        m = re.search(r"test cases:\s+(\d+) \|\s+(\d+) passed \|\s+0 failed \|\s+0 skipped", out)
        self.assertIsNotNone(m, out[-2000:])
        self.assertGreaterEqual(int(m.group(1)), 7)

    def test_rig_prints_its_line(self):
        rc, out, err = self.run_program([RIG, "--invocations", "3000", "--concurrency", "4"], 120)
        self.assertEqual(rc, 0, out + err[-3000:])
        m = RIG_LINE.search(out)
        self.assertIsNotNone(m, out)
        self.assertGreater(int(m.group(1)), 0)
        self.assertEqual(int(m.group(5)), 3000)
        self.assertEqual(int(m.group(6)), 4)
        p50, p90, p99 = float(m.group(2)), float(m.group(3)), float(m.group(4))
        self.assertTrue(0 < p50 <= p90 <= p99, out)
        # Bad flags: a usage error, not a run.
        rc, out, err = self.run_program([RIG, "--concurrency", "zero"], 10)
        self.assertEqual(rc, 2)
        self.assertIn("bad option --concurrency zero", err)

    def test_installed_library_builds_the_rig_with_pkg_config(self):
        dest = tempfile.mkdtemp(prefix="fv-embed-install-")
        self.addCleanup(shutil.rmtree, dest, True)
        subprocess.run(["meson", "install", "-C", BUILD, "--destdir", dest, "--no-rebuild", "--quiet"],
                       check=True, capture_output=True, timeout=scaled(120))
        pcs = glob.glob(os.path.join(dest, "**", "pkgconfig", "faasvisor.pc"), recursive=True)
        self.assertEqual(len(pcs), 1, pcs)
        with open(pcs[0]) as f:
            prefix = re.search(r"^prefix=(.*)$", f.read(), re.M).group(1)
        env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pcs[0]))
        pkg = ["pkg-config", "--define-variable=prefix=" + dest + prefix]

        def pkg_config(*args):
            return subprocess.run(pkg + list(args) + ["faasvisor"], check=True, capture_output=True, text=True,
                                  env=env).stdout.split()

        cflags = pkg_config("--cflags")
        # The public headers only (simdjson's Requires.private brings a -D).
        self.assertEqual([f for f in cflags if f.startswith("-I")], ["-I" + dest + prefix + "/include"])
        for header in ("node.h", "embed.h", "frame.h", "function.h"):
            self.assertTrue(os.path.exists(os.path.join(dest + prefix, "include", "faasvisor", header)), header)
        helpers = pkg_config("--variable=helperdir")[0]
        for helper in ("faasvisor-stem", "faasvisor-adapter", "faasvisor-unpack", "faasvisor-net"):
            self.assertTrue(os.access(os.path.join(helpers, helper), os.X_OK), helper)
        libdir = pkg_config("--variable=libdir")[0]
        self.assertTrue(os.path.exists(os.path.join(libdir, "libfaasvisor.a")))
        sanitize = ["-fsanitize=address,undefined"] if is_sanitized(RIG) else []
        source = os.path.join(ROOT, "examples", "rig", "rig.cc")
        builds = {
            # The shared library, as pkg-config gives it.
            "shared": pkg_config("--libs"),
            # The static one, with what it needs (Requires.private).
            "static": [os.path.join(libdir, "libfaasvisor.a")] + [
                flag for flag in pkg_config("--static", "--libs") if flag not in ("-lfaasvisor",) and not flag.startswith("-L" + libdir)],
        }
        for kind, libs in builds.items():
            with self.subTest(kind=kind):
                rig = os.path.join(dest, "faasvisor-rig-" + kind)  # faasvisor-*: see tests/embed/meson.build
                build = subprocess.run(["c++", "-std=c++20", "-O2", "-Wall", "-Wextra", "-Werror"] + sanitize + cflags
                                       + [source, "-o", rig] + libs,
                                       capture_output=True, text=True, timeout=scaled(300))
                self.assertEqual(build.returncode, 0, build.stderr[-4000:])
                run_env = dict(os.environ, LD_LIBRARY_PATH=libdir)
                needed = subprocess.run(["ldd", rig], capture_output=True, text=True, env=run_env).stdout
                self.assertEqual("libfaasvisor.so" in needed, kind == "shared", needed)
                rc, out, err = self.run_program([rig, "--image", ECHO_IMAGE, "--helpers", helpers,
                                                 "--invocations", "1000", "--concurrency", "2"], 120, env=run_env)
                self.assertEqual(rc, 0, out + err[-3000:])
                self.assertIsNotNone(RIG_LINE.search(out), out)


if __name__ == "__main__":
    unittest.main()
