"""Templates (docs/templates.md): a Python function's cold starts fork a template that has
imported the function, into a pooled sandbox. Checked with the real daemon and real
instances: a template-born instance is isolated like a stem-born one (its own pid namespace
with pid 1-2 visible, a read-only root, its own /tmp, no network, no capabilities, no new
privileges, cgroup limits, no descriptor of the template), its random sources differ from
its siblings', a dead template is rebuilt, an update replaces it, its memory shows in the
stats, and faasvisor.template: off falls back to the exec path.
"""

import json
import os
import signal
import unittest

from harness import (ECHO_IMAGE, FUNCTIONS_DIR, MISBEHAVE_IMAGE, PYECHO_IMAGE, PYECHO_PROCESS, PYTHON_TEST_PROCESS,
                     DaemonTestCase, descendants_of, scaled, wait_until)

PYISO_IMAGE = os.path.join(FUNCTIONS_DIR, "pyiso")


class TemplateTests(DaemonTestCase):
    FLAGS = ("--stop-grace-ms", "1000")

    def deploy(self, name, template=None, memory=None, env=None, method="POST", expect=202):
        spec = {"service": name, "image": PYISO_IMAGE, "envProcess": PYTHON_TEST_PROCESS}
        if template is not None:
            spec["annotations"] = {"faasvisor.template": template}
        if memory:
            spec["limits"] = {"memory": memory}
        if env:
            spec["envVars"] = env
        r = self.daemon.request(method, "/system/functions", spec)
        self.assertEqual(r.status, expect, r.body)
        return r

    def template(self, name):
        return self.daemon.function(name)["faasvisor"].get("template")

    def wait_template(self, name, state="ready"):
        wait_until(lambda: (self.template(name) or {}).get("state") == state, scaled(20),
                   "the template of %s to be %s" % (name, state))
        return self.template(name)

    def cold(self, name, query="mode=report"):
        """An invocation that needs a new instance: none is left warm before it."""
        self.assertEqual(self.daemon.scale(name, 0).status, 202)
        wait_until(lambda: not self.daemon.instances(name), scaled(10), "no instance of " + name)
        # From rest: a ready template has a primed sandbox again (priming follows a cold start
        # by 50 ms; without one, a cold start may take the exec path, which is not under test).
        t = self.template(name)
        if t is not None and t["state"] == "ready":
            wait_until(lambda: self.template(name)["primed"] >= 1, scaled(10), "a primed sandbox of " + name)
        r = self.daemon.invoke(name, b"", query=query)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.header("X-Faasvisor-Start"), "cold")
        return json.loads(r.body) if query.startswith("mode=report") else r

    def template_born(self, name):
        """Deploys (if needed), waits for the template, and returns a template-born report."""
        if self.daemon.function(name) is None:
            self.deploy(name)
        self.wait_template(name)
        rep = self.cold(name)
        self.assertTrue(rep["from_template"], rep)
        return rep

    def test_isolated_like_a_stem_born_instance(self):
        rep = self.template_born("tpl-iso")
        # Its own pid namespace: the stem (pid 1) and the function; the template and the
        # child that forked the function are outside it.
        self.assertLessEqual(rep["pids"], 2, rep)
        self.assertGreaterEqual(rep["pids"], 1, rep)
        self.assertEqual(rep["ppid"], 0, rep)  # its parent is outside the namespace
        self.assertFalse(rep["imported_in_this_process"], rep)  # imported once, in the template
        self.assertEqual(rep["root_write"], "EROFS", rep)
        self.assertEqual(rep["tmp_write"], "ok", rep)
        self.assertEqual(rep["uid"], 65534, rep)
        self.assertEqual(rep["interfaces"], ["lo"], rep)
        self.assertIn(rep["connect"], ("ENETUNREACH", "EHOSTUNREACH"), rep)
        for caps in ("cap_eff", "cap_prm", "cap_amb", "cap_bnd"):
            self.assertEqual(int(rep[caps], 16), 0, (caps, rep))
        self.assertEqual(rep["no_new_privs"], 1, rep)
        # The stem-born function's seccomp filter (src/stem/seccomp.h), on top of the
        # template's (which lets setns through for the template's children).
        self.assertEqual(rep["seccomp"], 2, rep)
        self.assertEqual(rep["seccomp_filters"], 2, rep)
        self.assertEqual(rep["unshare_user"], "EPERM", rep)
        self.assertEqual(rep["setns"], "EPERM", rep)
        self.assertEqual(rep["cwd"], PYISO_IMAGE, rep)
        # Nothing of the template's: its control socket, the namespaces, the cgroup files
        # and the adoption socket are all closed. What is left is the protocol's pipes, the
        # runtime's /dev/null and the listing's own directory.
        for fd, target in rep["fds"].items():
            self.assertTrue(target.startswith("pipe:") or target == "/dev/null"
                            or target == "/proc/%d/fd" % rep["pid"], (fd, target, rep["fds"]))
        self.assertTrue(rep["instance"].startswith("tpl-iso-"), rep)  # named at its cold start

    def test_same_report_as_the_exec_path(self):
        forked = self.template_born("tpl-same")
        self.deploy("tpl-same-off", template="off")
        execd = self.cold("tpl-same-off")
        self.assertFalse(execd["from_template"], execd)
        self.assertEqual(execd["ppid"], 1, execd)  # the stem's own child
        self.assertIsNone(self.template("tpl-same-off"))
        for key in ("root_write", "tmp_write", "uid", "interfaces", "connect", "cap_eff", "cap_bnd",
                    "no_new_privs", "seccomp", "unshare_user", "setns"):
            self.assertEqual(forked[key], execd[key], key)

    def test_each_instance_has_its_own_tmp_and_random_state(self):
        self.deploy("tpl-own")
        self.wait_template("tpl-own")
        for tag in ("first", "second", "third"):
            r = self.cold("tpl-own", query="mode=tmp&tag=" + tag)
            self.assertEqual(json.loads(r.body)["tmp"], [tag])  # nothing of the others'
        reports = [self.cold("tpl-own") for _ in range(3)]
        self.assertTrue(all(r["from_template"] for r in reports), reports)
        self.assertEqual(len({r["random"] for r in reports}), 3, reports)
        self.assertEqual(len({r["urandom"] for r in reports}), 3, reports)

    def test_memory_limit_holds_for_a_template_born_instance(self):
        self.deploy("tpl-hog", memory="48Mi")
        self.wait_template("tpl-hog")
        small = self.cold("tpl-hog", query="mode=alloc&mib=4")
        self.assertEqual(small.body, b"allocated 4 MiB")
        pid = self.daemon.instances("tpl-hog")[0]["pid"]
        self.daemon.record_children()
        hog = self.daemon.invoke("tpl-hog", b"", query="mode=alloc&mib=200")
        self.assertEqual(hog.status, 502, hog.body)
        self.daemon.assert_process_gone(pid)
        self.assertTrue(self.daemon.healthy())
        # The template lives on (it is not the instance) and the next cold start uses it.
        self.assertEqual(self.template("tpl-hog")["state"], "ready")
        again = self.cold("tpl-hog", query="mode=alloc&mib=4")
        self.assertEqual(again.body, b"allocated 4 MiB")

    def test_memory_is_shown_in_stats(self):
        self.deploy("tpl-mem")
        t = self.wait_template("tpl-mem")
        wait_until(lambda: self.daemon.stats("tpl-mem")["memory_bytes"]["template"] > 1 << 20,
                   scaled(10), "the template's memory in the stats")
        stats = self.daemon.stats("tpl-mem")
        self.assertEqual(stats["template"]["pid"], t["pid"])
        self.assertGreaterEqual(stats["memory_bytes"]["total"], stats["memory_bytes"]["template"])

    def test_a_dead_template_is_rebuilt(self):
        self.deploy("tpl-dead")
        first = self.wait_template("tpl-dead")
        self.cold("tpl-dead")
        # Kill the runtime (the template itself), as a crash would: its sandbox stays until
        # the children it forked are done, and the node builds a new template.
        below = descendants_of(first["pid"])
        inner = [p for p, e in below.items() if e[3] == first["pid"]]
        runtime = [p for p, e in below.items() if e[3] in inner and e[0].startswith("python")]
        self.assertTrue(runtime, "no python process below the template's sandbox %d" % first["pid"])
        for p in runtime:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until(lambda: (self.template("tpl-dead") or {}).get("state") != "ready", scaled(10),
                   "the node to see its template die")
        # Cold starts go on (the exec path while there is none), and a new one is built.
        r = self.daemon.invoke("tpl-dead", b"", query="mode=report")
        self.assertEqual(r.status, 200, r.body)
        wait_until(lambda: self.cold("tpl-dead")["from_template"]
                   and self.template("tpl-dead")["pid"] != first["pid"], scaled(20),
                   "a new template")
        self.assertGreaterEqual(self.template("tpl-dead")["builds"], 2)

    def test_update_replaces_the_template(self):
        self.deploy("tpl-upd", env={"GENERATION": "1"})
        old = self.wait_template("tpl-upd")
        self.cold("tpl-upd")
        self.daemon.record_children()
        self.deploy("tpl-upd", env={"GENERATION": "2"}, method="PUT")
        new = self.wait_template("tpl-upd")
        self.assertNotEqual(new["pid"], old["pid"])
        self.daemon.assert_process_gone(old["pid"])
        rep = self.cold("tpl-upd")
        self.assertTrue(rep["from_template"], rep)

    def test_delete_ends_the_template(self):
        self.deploy("tpl-del")
        t = self.wait_template("tpl-del")
        self.cold("tpl-del")
        self.daemon.record_children()
        r = self.daemon.request("DELETE", "/system/functions", {"functionName": "tpl-del"})
        self.assertEqual(r.status, 202, r.body)
        self.daemon.assert_process_gone(t["pid"])

    def test_c_function_from_its_template(self):
        """The C function SDK has a template mode too (faasvisor.template: on)."""
        spec = {"service": "tpl-c-iso", "image": MISBEHAVE_IMAGE, "envProcess": "./isolation",
                "annotations": {"faasvisor.template": "on"}}
        self.assertEqual(self.daemon.request("POST", "/system/functions", spec).status, 202)
        self.wait_template("tpl-c-iso")
        before = self.template("tpl-c-iso")["forks"]
        rep = self.cold("tpl-c-iso", query="mode=report")
        # The cold start may take a sandbox primed before `before` was read; the template
        # then primes the next one (forks count at priming), 50 ms after.
        wait_until(lambda: self.template("tpl-c-iso")["forks"] > before, scaled(10), "the template to fork again")
        self.assertLessEqual(rep["pids"], 2, rep)
        self.assertEqual(rep["root_write"], "EROFS", rep)
        self.assertEqual(rep["tmp_write"], "ok", rep)
        self.assertEqual(rep["uid"], 65534, rep)
        self.assertEqual(rep["interfaces"], ["lo"], rep)
        self.assertEqual(int(rep["cap_eff"], 16), 0, rep)
        self.assertEqual(int(rep["cap_bnd"], 16), 0, rep)
        self.assertEqual(rep["no_new_privs"], 1, rep)
        self.assertEqual(rep["seccomp"], 2, rep)

    def test_template_annotation(self):
        spec = {"service": "tpl-c", "image": ECHO_IMAGE, "envProcess": "./echo",
                "annotations": {"faasvisor.template": "on", "faasvisor.backend": "crun"}}
        r = self.daemon.request("POST", "/system/functions", spec)
        self.assertEqual(r.status, 400, r.body)
        self.assertIn("faasvisor.template", r.json()["error"])
        del spec["annotations"]["faasvisor.backend"]
        spec["annotations"]["faasvisor.template"] = "sometimes"
        r = self.daemon.request("POST", "/system/functions", spec)
        self.assertEqual(r.status, 400, r.body)
        # Behind faasvisor-adapter (docs/modes.md) there is no template to fork.
        spec["annotations"] = {"faasvisor.template": "on", "faasvisor.mode": "stdio"}
        r = self.daemon.request("POST", "/system/functions", spec)
        self.assertEqual(r.status, 400, r.body)
        self.assertIn("faasvisor.mode stdio", r.json()["error"])
        # auto leaves a Python function in http mode on the exec path.
        py = {"service": "tpl-http", "image": PYECHO_IMAGE, "envProcess": PYECHO_PROCESS,
              "annotations": {"faasvisor.mode": "http"}}
        r = self.daemon.request("POST", "/system/functions", py)
        self.assertEqual(r.status, 202, r.body)
        self.assertIsNone(self.template("tpl-http"))


if __name__ == "__main__":
    unittest.main()
