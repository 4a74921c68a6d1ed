"""Language runtimes: the Node.js and Python examples boot cold, then serve warm."""

import os

from harness import DaemonTestCase, PYECHO_IMAGE, PYECHO_PROCESS, ROOT, scaled

NODEECHO_IMAGE = os.path.join(ROOT, "examples", "nodeecho")
NODEECHO_PROCESS = "/usr/bin/node ../../runtimes/node/faasvisor_runtime.js handler"


class RuntimeTests(DaemonTestCase):

    def cold_then_warm(self, name, image, process):
        d = self.daemon
        d.deploy(name, image=image, process=process, memory="256Mi")
        cold = d.invoke(name, b"first call", headers={"Content-Type": "text/x-first"},
                        timeout=scaled(30))
        self.assertEqual(cold.status, 200, cold)
        self.assertEqual(cold.body, b"first call")
        self.assertEqual(cold.header("Content-Type"), "text/x-first")
        self.assertEqual(cold.header("X-Faasvisor-Start"), "cold")
        instance = cold.header("X-Faasvisor-Instance")
        binary = bytes(range(256)) * 300  # every byte value, across several reads
        for i in range(3):
            warm = d.invoke(name, binary + b"%d" % i, headers={"Content-Type": "application/octet-stream"})
            self.assertEqual(warm.status, 200, warm)
            self.assertEqual(warm.header("X-Faasvisor-Start"), "warm")
            self.assertEqual(warm.header("X-Faasvisor-Instance"), instance)
            self.assertTrue(warm.body == binary + b"%d" % i, "binary body echoed intact")
        empty = d.invoke(name, b"")
        self.assertEqual(empty.status, 200, empty)
        self.assertEqual(empty.body, b"")
        self.assertEqual(empty.header("X-Faasvisor-Instance"), instance)
        stats = d.stats(name)
        self.assertEqual(stats["invocations"]["cold"], 1, stats)
        self.assertEqual(stats["invocations"]["warm"], 4, stats)
        self.assertEqual(stats["invocations"]["errors"], 0, stats)
        self.assertEqual(stats["init_ms"]["count"], 1, stats)
        insts = d.instances(name)
        self.assertEqual(len(insts), 1, insts)
        self.assertEqual(insts[0]["served"], 5)
        self.assertEqual(insts[0]["state"], "warm")

    def test_nodeecho_cold_then_warm(self):
        self.cold_then_warm("nodeecho", NODEECHO_IMAGE, NODEECHO_PROCESS)

    def test_pyecho_cold_then_warm(self):
        self.cold_then_warm("pyecho", PYECHO_IMAGE, PYECHO_PROCESS)
