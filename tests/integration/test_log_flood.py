"""Instances that flood stderr while other calls run (issue 16: a crun stderr-flood call got
504 in the 30-minute soak). Every call must answer 200 well within its timeout, whatever the
others write to their logs: the node drains each instance's log pipe as it fills, so no
function blocks on stderr; and the function's log keeps its limits (LogBook in
src/pool/logbook.h) with no line lost in the part it keeps.

tests/functions/misbehave.c ?mode=stderr writes 10,000 lines (~600 KB, ten pipes-full) to
stderr one write at a time, then echoes the body."""

import os
import re
import shutil
import threading
import time
import unittest

from harness import ROOT, DaemonTestCase, MISBEHAVE_IMAGE, scaled
from test_lifecycle import get_logs
import test_containers

FLOOD_LINES = 10000
# A flood takes 20-50 ms here when the machine is quiet and stayed under 1.3 s at load 23
# (docs/soak.md): 10 s is far beyond load and catches a drain that stops (a blocked
# function waits forever).
TIMEOUT_MS = int(scaled(10000))
LINE = re.compile(r"misbehave: stderr line (\d+) of %d" % FLOOD_LINES)


def logbook_limit(name):
    """A LogBook limit (kMaxLines, kMaxBytes) read from the header, not copied here."""
    with open(os.path.join(ROOT, "src", "pool", "logbook.h")) as f:
        text = f.read()
    m = re.search(r"%s = ([^;]+);" % name, text)
    return eval(m.group(1).replace("u <<", " <<"), {})  # "2000" or "1u << 20"


class LogFloodTests(DaemonTestCase):
    FLAGS = ("--stem-pool", "2", "--stop-grace-ms", "1000")

    def flood_while_others_run(self, name, spec_extra, floods=4, calm_calls=40):
        """Two clients flood the function's stderr (two instances) while two others call a
        quiet echo; then the log is checked."""
        d = self.daemon
        calm = name + "-calm"
        d.deploy(calm)
        spec = dict(spec_extra)
        spec.setdefault("annotations", {})["faasvisor.timeout"] = "%dms" % TIMEOUT_MS
        spec["labels"] = {"com.openfaas.scale.max": "2"}
        r = d.request("POST", "/system/functions", spec)
        self.assertEqual(r.status, 202, r)
        failures, lock = [], threading.Lock()
        floods_done = []

        def client(fn, query, count, tag):
            conn = d.connect(timeout=scaled(60))
            for i in range(count):
                body = b"%s %d" % (tag, i)
                start = time.monotonic()
                r = d.invoke(fn, body, query=query, conn=conn, timeout=scaled(60))
                elapsed_ms = (time.monotonic() - start) * 1000
                with lock:
                    if (r.status, r.body) != (200, body):
                        failures.append("%s %s: %d %r" % (fn, query, r.status, r.body[:200]))
                    elif elapsed_ms >= TIMEOUT_MS:
                        failures.append("%s %s: 200 after %.0f ms, beyond its timeout" % (fn, query, elapsed_ms))
                    elif query:
                        floods_done.append(elapsed_ms)
            conn.close()

        threads = [threading.Thread(target=client, args=(name, "mode=stderr", floods, b"flood-%d" % t))
                   for t in range(2)]
        threads += [threading.Thread(target=client, args=(calm, "", calm_calls, b"calm-%d" % t))
                    for t in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(scaled(120))
        self.assertFalse(any(t.is_alive() for t in threads), "a client did not finish")
        self.assertEqual(failures, [])
        self.assertEqual(len(floods_done), 2 * floods)

        # The log: within its limits, and the lines it kept are each instance's in order,
        # none lost (the ring drops only its oldest lines), ending with the last one.
        max_lines, max_bytes = logbook_limit("kMaxLines"), logbook_limit("kMaxBytes")
        lines = get_logs(self, d, name=name)
        self.assertEqual(len(lines), max_lines, "a full log holds exactly its line limit")
        self.assertLessEqual(sum(len(l["text"]) + len(l["instance"]) for l in lines), max_bytes)
        last = {}
        for entry in lines:
            m = LINE.match(entry["text"])
            self.assertIsNotNone(m, entry)
            n = int(m.group(1))
            prev = last.get(entry["instance"])
            if prev is not None:
                self.assertEqual(n, prev % FLOOD_LINES + 1, "a line of %s was lost" % entry["instance"])
            last[entry["instance"]] = n
        self.assertTrue(all(n == FLOOD_LINES for n in last.values()), last)
        stats = d.stats(name)
        self.assertEqual(stats["invocations"]["errors"], 0, stats)
        for fn in (name, calm):
            self.assertEqual(d.request("DELETE", "/system/functions", {"functionName": fn}).status, 202)
        return floods_done

    def test_process_floods_answer_in_time(self):
        self.flood_while_others_run("flood-process", {
            "service": "flood-process", "image": MISBEHAVE_IMAGE, "envProcess": "./misbehave"})

    @unittest.skipUnless(shutil.which("crun") and os.path.exists("/usr/bin/unshare"), "crun is not installed")
    def test_crun_floods_answer_in_time(self):
        test_containers.build_images()
        self.flood_while_others_run("flood-crun", test_containers.container_spec("flood-crun", "misbehave"))
