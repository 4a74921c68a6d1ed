"""Instance networking (docs/network.md): faasvisor.network=egress on the process, crun, runc
and microvm backends, closed by default and tight when on.

The tests build their own "internet": a network namespace joined to the host by a veth pair,
with HTTP servers in it, the only destination anything here fetches from. Instances run
tests/functions/fetch.c: ?url=http://A.B.C.D:PORT/PATH fetches (502 naming the errno when it
cannot), ?mode=addr lists its IPv4 addresses, ?mode=resolv shows /etc/resolv.conf; every
instance also serves "fetch-listener" on 0.0.0.0:8080.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from harness import BUILD, ROOT, Daemon, DaemonTestCase, scaled, wait_until

FETCH_DIR = os.path.join(BUILD, "tests", "functions")
# Container and VM images need static programs: a sanitizer build's are not, so its tests take the
# release build's images (tools/test sets FAASVISOR_IMAGE_BUILD), as test_containers does.
IMAGE_BUILD = os.environ.get("FAASVISOR_IMAGE_BUILD", BUILD)
INITRAMFS = os.path.join(IMAGE_BUILD, "vm", "fetch.initramfs")  # the fetch function with virtio_net
ROOTFS = os.path.join(IMAGE_BUILD, "images", "fetch", "rootfs")
DNS = "192.0.2.53"  # TEST-NET-1: distinctive in resolv.conf, never answered
CONTENT = "hello from the test internet %d\n" % os.getpid()
BIG_BYTES = 3 << 20


# http.server's own HTTPServer looks its name up in DNS at start (getfqdn), which this
# namespace cannot reach: bind without it.
SERVER = """
import http.server, os, socketserver, sys
class Server(http.server.ThreadingHTTPServer):
    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
os.chdir(sys.argv[3])
Server((sys.argv[1], int(sys.argv[2])), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def run(*argv):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class Internet:
    """A namespace with a veth to the host and HTTP servers on two ports (the only
    destination of these tests), at 10.251.X.Y/30 by our pid (runs side by side differ)."""

    def __init__(self):
        index = os.getpid() % 16384
        base = "10.251.%d.%d" % (index >> 6, (index & 63) * 4)
        prefix = base.rsplit(".", 1)[0]
        last = int(base.rsplit(".", 1)[1])
        self.host_ip = "%s.%d" % (prefix, last + 1)
        self.ip = "%s.%d" % (prefix, last + 2)
        self.ns = "fvtinet%d" % os.getpid()
        self.veth = "fvti%d" % (os.getpid() % 10000000)
        self.dir = tempfile.mkdtemp(prefix="fv-internet-")
        self.servers = []

    def start(self):
        with open(os.path.join(self.dir, "hello.txt"), "w") as f:
            f.write(CONTENT)
        with open(os.path.join(self.dir, "big.bin"), "wb") as f:
            f.write(os.urandom(BIG_BYTES))
        run("ip", "netns", "add", self.ns)
        run("ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
        run("ip", "addr", "add", self.host_ip + "/30", "dev", self.veth)
        run("ip", "link", "set", self.veth, "up")
        run("ip", "-n", self.ns, "addr", "add", self.ip + "/30", "dev", "eth0")
        run("ip", "-n", self.ns, "link", "set", "eth0", "up")
        run("ip", "-n", self.ns, "link", "set", "lo", "up")
        run("ip", "-n", self.ns, "route", "add", "default", "via", self.host_ip)
        for port in (8000, 8001):
            self.servers.append(subprocess.Popen(
                ["ip", "netns", "exec", self.ns, "python3", "-c", SERVER, self.ip, str(port), self.dir],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in (8000, 8001):
            wait_until(lambda: self.serving(port), scaled(10), "the test internet's server on %d" % port)
        return self

    def serving(self, port):
        r = subprocess.run(["ip", "netns", "exec", self.ns, "python3", "-c",
                            "import socket; socket.create_connection(('%s', %d), 1)" % (self.ip, port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return r.returncode == 0

    def url(self, port=8000, path="/hello.txt"):
        return "http://%s:%d%s" % (self.ip, port, path)

    def stop(self):
        for p in self.servers:
            p.kill()
            p.wait()
        subprocess.run(["ip", "link", "del", self.veth], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", self.ns], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


class HostService:
    """A TCP service of the host's bound to 0.0.0.0 that answers anyone who connects."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nhost")
            c.close()

    def close(self):
        self.sock.close()


def spec(name, backend="process", network="egress", allow=None, **egress):
    s = {"service": name, "annotations": {"faasvisor.backend": backend}}
    for key, value in egress.items():
        s["annotations"]["faasvisor.egress." + key] = value
    if backend == "process":
        s.update(image=FETCH_DIR, envProcess="./fetch")
    elif backend == "microvm":
        s.update(image=INITRAMFS, envProcess="/fetch")
    else:
        s.update(image=ROOTFS, envProcess="/fetch")
    if network is not None:
        s["annotations"]["faasvisor.network"] = network
    if allow is not None:
        s["annotations"]["faasvisor.egress.allow"] = allow
    return s


def node_network_left(pid):
    """What of node `pid`'s network is still on the host."""
    left = []
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    if "faasvisor_%d" % pid in tables.split():
        left.append("nft table inet faasvisor_%d" % pid)
    if os.path.exists("/sys/class/net/fvb%d" % pid):
        left.append("bridge fvb%d" % pid)
    if os.path.exists("/run/faasvisor/net/%d" % pid):
        left.append("/run/faasvisor/net/%d (%s)" % (pid, os.listdir("/run/faasvisor/net/%d" % pid)))
    mounts = open("/proc/self/mountinfo").read()
    if "/run/faasvisor/net/%d/" % pid in mounts:
        left.append("namespace mounts under /run/faasvisor/net/%d" % pid)
    return left


def bridge_ports(pid):
    path = "/sys/class/net/fvb%d/brif" % pid
    return os.listdir(path) if os.path.isdir(path) else []


class NetworkCase(DaemonTestCase):
    FLAGS = ("--dns", DNS)
    internet = None
    host = None

    @classmethod
    def setUpClass(cls):
        if not os.path.isdir(ROOTFS):
            subprocess.run([os.path.join(ROOT, "tools", "mkimage"), IMAGE_BUILD], check=True,
                           stdout=subprocess.DEVNULL)
        cls.internet = Internet()
        try:
            cls.internet.start()
        except BaseException:
            cls.internet.stop()
            raise
        cls.host = HostService()
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.host.close()
            cls.internet.stop()

    def deploy(self, s, expect=202):
        r = self.daemon.request("POST", "/system/functions", s)
        self.assertEqual(r.status, expect, r.body)
        self.addCleanup(self.daemon.request, "DELETE", "/system/functions", {"functionName": s["service"]})
        return r

    def fetch(self, name, url, timeout_ms=1500):
        return self.daemon.invoke(name, query="url=%s&timeout_ms=%d" % (url, timeout_ms), method="GET",
                                  timeout=scaled(30))

    def assert_unreachable(self, name, url):
        """Dropped or unroutable; a refusal (ECONNREFUSED) would mean something answered."""
        r = self.fetch(name, url)
        self.assertEqual(r.status, 502, "%s reached %s: %r" % (name, url, r.body))
        self.assertRegex(r.body, rb"connect: (ETIMEDOUT|EHOSTUNREACH|ENETUNREACH)")

    def network_info(self):
        return self.daemon.get("/system/info").json()["faasvisor"]["network"]


class EgressTest(NetworkCase):
    def test_info_shows_the_network(self):
        info = self.daemon.get("/system/info").json()["faasvisor"]
        self.assertTrue(info["network"]["available"], info["network"])
        support = {b["name"]: b["network"] for b in info["backends"]}
        self.assertEqual(support, {"process": True, "crun": True, "runc": True, "gvisor": False,
                                   "microvm": True, "unikernel": False})

    def test_egress_fetches_from_the_internet(self):
        for backend in ("process", "crun", "runc"):
            with self.subTest(backend=backend):
                self.deploy(spec("out-" + backend, backend))
                r = self.fetch("out-" + backend, self.internet.url())
                self.assertEqual(r.status, 200, r.body)
                self.assertEqual(r.body.decode(), CONTENT)
                self.assertEqual(r.header("X-Upstream-Status"), "200")
                addr = self.daemon.invoke("out-" + backend, query="mode=addr", method="GET").body.decode()
                subnet = self.network_info()["subnet"].rsplit(".", 1)[0] + "."
                self.assertRegex(addr, r"eth0 " + re.escape(subnet) + r"\d+", addr)
                resolv = self.daemon.invoke("out-" + backend, query="mode=resolv", method="GET")
                self.assertEqual(resolv.status, 200, resolv.body)
                self.assertEqual(resolv.body.decode().split(), ["nameserver", DNS])

    def test_microvm_egress(self):
        info = {b["name"]: b for b in self.daemon.get("/system/info").json()["faasvisor"]["backends"]}
        if not info["microvm"]["available"] or not os.path.exists(INITRAMFS):
            self.skipTest("microvm backend unavailable here: %s" % info["microvm"].get("why_not", INITRAMFS))
        self.deploy(spec("vm-out", "microvm"))
        r = self.daemon.invoke("vm-out", query="mode=addr", method="GET", timeout=scaled(60))
        self.assertEqual(r.status, 200, r.body)
        subnet = self.network_info()["subnet"].rsplit(".", 1)[0] + "."
        self.assertRegex(r.body.decode(), r"eth0 " + re.escape(subnet) + r"\d+")
        vm_ip = re.search(r"eth0 ([0-9.]+)", r.body.decode()).group(1)
        r = self.fetch("vm-out", self.internet.url())
        self.assertEqual((r.status, r.body.decode()), (200, CONTENT))
        resolv = self.daemon.invoke("vm-out", query="mode=resolv", method="GET")
        self.assertEqual(resolv.body.decode().split(), ["nameserver", DNS])
        gateway = subnet + "1"
        self.assert_unreachable("vm-out", "http://%s:%d/" % (gateway, self.host.port))
        self.assert_unreachable("vm-out", "http://169.254.169.254/")
        # The guest's listener answers inside it, not to another instance.
        r = self.fetch("vm-out", "http://127.0.0.1:8080/")
        self.assertEqual((r.status, r.body), (200, b"fetch-listener\n"))
        self.deploy(spec("vm-peer"))
        self.assert_unreachable("vm-peer", "http://%s:8080/" % vm_ip)

    def test_without_egress_nothing_is_reachable(self):
        for backend in ("process", "crun", "runc"):
            with self.subTest(backend=backend):
                self.deploy(spec("closed-" + backend, backend, network=None))
                r = self.fetch("closed-" + backend, self.internet.url())
                self.assertEqual(r.status, 502, r.body)
                self.assertIn(b"ENETUNREACH", r.body)
                addr = self.daemon.invoke("closed-" + backend, query="mode=addr", method="GET").body.decode()
                self.assertEqual(addr.split(), ["lo", "127.0.0.1"])

    def test_the_host_is_unreachable(self):
        self.deploy(spec("probe"))
        gateway = self.network_info()["subnet"].rsplit(".", 1)[0] + ".1"
        # The service answers from the host itself (the control), never from an instance.
        with socket.create_connection((self.internet.host_ip, self.host.port), 2) as c:
            self.assertIn(b"host", c.recv(100))
        for address in (gateway, self.internet.host_ip):
            with self.subTest(address=address):
                self.assert_unreachable("probe", "http://%s:%d/" % (address, self.host.port))
                self.assert_unreachable("probe", "http://%s:%d/system/info" % (address, self.daemon.port))
        self.assertEqual(self.host.accepted, 1, "an instance reached the host's 0.0.0.0 service")
        self.assert_unreachable("probe", "http://169.254.169.254/latest/meta-data/")

    def test_other_instances_are_unreachable(self):
        self.deploy(spec("peer-a"))
        self.deploy(spec("peer-b", "runc"))
        a = self.daemon.invoke("peer-a", query="mode=addr", method="GET").body.decode()
        a_ip = re.search(r"eth0 ([0-9.]+)", a).group(1)
        # A's listener answers inside A (the control)...
        r = self.fetch("peer-a", "http://127.0.0.1:8080/")
        self.assertEqual((r.status, r.body), (200, b"fetch-listener\n"))
        # ... but not B, on the same bridge.
        self.assert_unreachable("peer-b", "http://%s:8080/" % a_ip)

    def test_the_allow_list_blocks_what_it_does_not_name(self):
        self.deploy(spec("narrow", allow="%s/32:8001" % self.internet.ip))
        r = self.fetch("narrow", self.internet.url(8001))
        self.assertEqual((r.status, r.body.decode()), (200, CONTENT))
        self.assert_unreachable("narrow", self.internet.url(8000))
        # A whole network without a port: both ports.
        prefix = self.internet.ip.rsplit(".", 1)[0]
        self.deploy(spec("wide", "crun", allow="192.0.2.0/24, %s.0/24" % prefix))
        for port in (8000, 8001):
            r = self.fetch("wide", self.internet.url(port))
            self.assertEqual(r.status, 200, r.body)
        self.deploy(spec("elsewhere", allow="192.0.2.0/24"))
        self.assert_unreachable("elsewhere", self.internet.url(8000))

    def test_the_rate_cap_holds(self):
        self.deploy(spec("capped", rate="1Mi"))
        self.deploy(spec("uncapped"))
        for name in ("capped", "uncapped"):  # cold starts out of the timing
            self.assertEqual(self.fetch(name, self.internet.url()).status, 200)
        timings = {}
        for name in ("capped", "uncapped"):
            started = time.monotonic()
            r = self.fetch(name, self.internet.url(path="/big.bin"), timeout_ms=30000)
            timings[name] = time.monotonic() - started
            self.assertEqual((r.status, len(r.body)), (200, BIG_BYTES), r.body[:200])
        expected = BIG_BYTES / float(1 << 20)  # seconds at 1 MiB/s
        # Within 20% (the token bucket's first burst, 1/10 s, comes at once).
        self.assertLess(abs(timings["capped"] - expected), 0.2 * expected, timings)
        self.assertLess(timings["uncapped"], expected / 2, timings)

    def test_metrics_count_the_bytes(self):
        self.deploy(spec("counted"))

        def counted():
            text = self.daemon.get("/metrics").body.decode()
            values = {}
            for d in ("sent", "received"):
                m = re.search(r'faasvisor_network_bytes_total\{function_name="counted[^"]*",direction="%s"\} (\S+)' % d, text)
                values[d] = float(m.group(1)) if m else None
            return values
        r = self.fetch("counted", self.internet.url(path="/big.bin"), timeout_ms=30000)
        self.assertEqual(r.status, 200)
        live = counted()
        self.assertGreaterEqual(live["received"], BIG_BYTES, live)
        self.assertLess(live["received"], BIG_BYTES * 1.2, live)
        self.assertGreater(live["sent"], 0, live)
        # Still counted once the instance has ended.
        self.daemon.request("POST", "/system/scale-function/counted", {"serviceName": "counted", "replicas": 0})
        wait_until(lambda: self.daemon.get("/system/info").json()["faasvisor"]["instances"] == 0,
                   scaled(10), "the instance to stop")
        after = counted()
        self.assertGreaterEqual(after["received"], live["received"], (live, after))
        self.assertLess(after["received"], BIG_BYTES * 1.2, after)

    def test_the_connection_limit_holds(self):
        self.deploy(spec("few", connections="3"))
        r = self.daemon.invoke("few", query="mode=conns&n=5&timeout_ms=1500&url=" + self.internet.url(path="/"),
                               method="GET", timeout=scaled(30))
        self.assertEqual((r.status, r.body), (200, b"connected 3 of 5\n"))
        self.deploy(spec("many"))
        r = self.daemon.invoke("many", query="mode=conns&n=5&timeout_ms=1500&url=" + self.internet.url(path="/"),
                               method="GET", timeout=scaled(30))
        self.assertEqual((r.status, r.body), (200, b"connected 5 of 5\n"))

    def test_bad_network_annotations_are_400(self):
        cases = [
            (spec("bad1", network="bridge"), "faasvisor.network"),
            (spec("bad2", network=None, allow="10.0.0.0/8"), "needs faasvisor.network=egress"),
            (spec("bad3", allow="10.0.0.1/8"), "host bits"),
            (spec("bad4", allow="10.0.0.0/8:0"), "port"),
            (spec("bad5", allow="example.com"), "IPv4"),
            (spec("bad6", allow=" , "), "empty"),
            (spec("bad7", "gvisor"), "faasvisor.network"),
            (spec("bad9", rate="fast"), "faasvisor.egress.rate"),
            (spec("bad10", rate="1"), "faasvisor.egress.rate"),
            (spec("bad11", connections="0"), "faasvisor.egress.connections"),
            (spec("bad12", network=None, connections="4"), "needs faasvisor.network=egress"),
        ]
        for s, words in cases:
            with self.subTest(s["service"]):
                r = self.daemon.request("POST", "/system/functions", s)
                self.assertEqual(r.status, 400, r.body)
                self.assertIn(words, r.json()["error"])
        s = spec("bad8", "unikernel")
        s["image"] = os.path.join(os.environ.get("FAASVISOR_UNIKERNEL_DIR", os.path.join(BUILD, "unikernel")), "echo.uk")
        if os.path.exists(s["image"]):
            r = self.daemon.request("POST", "/system/functions", s)
            self.assertEqual(r.status, 400, r.body)
            self.assertIn("no network stack", r.json()["error"])

    def test_namespaces_are_given_back(self):
        self.deploy(spec("churn", allow="%s/32" % self.internet.ip))
        pid = self.daemon.pid
        counts = []
        for _ in range(4):
            self.assertEqual(self.fetch("churn", self.internet.url()).status, 200)
            r = self.daemon.request("POST", "/system/scale-function/churn", {"serviceName": "churn", "replicas": 0})
            self.assertIn(r.status, (200, 202), r.body)
            wait_until(lambda: self.daemon.get("/system/info").json()["faasvisor"]["instances"] == 0,
                       scaled(10), "the instance to stop")
            time.sleep(0.5)  # the release and the refill helpers
            counts.append(len(bridge_ports(pid)))
        # Each cold start took a namespace and its stop gave it back: the bridge does not grow.
        self.assertEqual(counts[-1], counts[0], counts)


class KilledNodeTest(unittest.TestCase):
    def test_a_killed_node_leaves_no_network_after_restart(self):
        d = Daemon().start()
        try:
            r = d.request("POST", "/system/functions", spec("killed"))
            self.assertEqual(r.status, 202, r.body)
            self.assertEqual(d.invoke("killed", query="mode=addr", method="GET").status, 200)
            killed = d.pid
            self.assertGreater(len(bridge_ports(killed)), 0)
            self.assertNotEqual(node_network_left(killed), [])
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait()
        finally:
            d.finish(timeout=scaled(5))
        d2 = Daemon().start()
        try:
            self.assertEqual(node_network_left(killed), [])
            # Its veths went with its namespaces: no interface is left on a bridge of its.
            links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
            self.assertNotIn("fvb%d" % killed, links)
        finally:
            problems = d2.stop()
        self.assertEqual(problems, [], "\n".join(problems))
        self.assertEqual(node_network_left(d2.pid), [], "a clean stop left the network")


if __name__ == "__main__":
    unittest.main()
