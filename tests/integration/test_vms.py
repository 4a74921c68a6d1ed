"""The VM backends (QEMU): Linux microVMs and unikernels.

Each QEMU runs in a sandbox (faasvisor-stem): its own cgroup under the node's subtree with
the function's limits, and it dies with the node (NodeKilledTests). A microVM carries the
protocol on a virtio serial port (virtio-mmio), or on COM1 with faasvisor.vm.transport=serial.

microvm: the host's kernel (tools/vmkernel caches it uncompressed in <build>/vm/vmlinux)
boots each function's initramfs (<build>/vm/<name>.initramfs, made by the build with
tools/mkinitramfs: faasvisor-vminit as /init and the static function). Cold then warm, a
few concurrent cold starts, a function that crashes or hangs mid-invocation, one that dies
or never gets ready at boot: each gets its status and leaves no QEMU process behind (the
harness's leak check runs after every class).

unikernel: a PVH ELF booted directly. Until the unikernel kit's images exist, the host's
vmlinux stands in as a PVH image that boots but never speaks the protocol (a boot timeout).

Images hold static binaries: a sanitizer build's functions are not static, so tools/test
points FAASVISOR_IMAGE_BUILD at the release build, as for the container images. Guests run
under TCG (--accel=tcg; the harness's default) except in AcceleratorProbeTests.
"""

import json
import os
import shutil
import signal
import subprocess
import time
import unittest

from harness import (BUILD, ROOT, Daemon, DaemonTestCase, RawReader, cgroup_dirs_of, descendants_of,
                     parallel, proc_stat, scaled, wait_until)

IMAGE_BUILD = os.environ.get("FAASVISOR_IMAGE_BUILD", BUILD)
VM_DIR = os.path.join(IMAGE_BUILD, "vm")
KERNEL = os.path.join(VM_DIR, "vmlinux")
QEMU = shutil.which("qemu-system-x86_64")
UNIKERNEL_DIR = os.environ.get("FAASVISOR_UNIKERNEL_DIR", os.path.join(IMAGE_BUILD, "unikernel"))


def initramfs(name):
    return os.path.join(VM_DIR, name + ".initramfs")


def have_images():
    return all(os.path.exists(initramfs(n)) for n in ("echo", "hash", "misbehave"))


def ensure_kernel():
    """tools/vmkernel: extracts the host's kernel once (cached by the source's identity)."""
    subprocess.run([os.path.join(ROOT, "tools", "vmkernel"), "--build", IMAGE_BUILD], check=True,
                   stdout=subprocess.DEVNULL)


def vm_spec(name, image, backend="microvm", process=None, memory="128Mi", **annotations):
    spec = {"service": name, "image": image, "envProcess": process or "/" + os.path.basename(image).split(".")[0],
            "limits": {"memory": memory}, "annotations": {"faasvisor.backend": backend}}
    spec["annotations"].update(annotations)
    return spec


def qemu_of(instance_pid):
    """The QEMU process in an instance's sandbox (the instance's pid is the sandbox's)."""
    found = [pid for pid, st in descendants_of(instance_pid).items() if st[0].startswith("qemu-system")]
    return found[0] if found else None


def dead(pid):
    st = proc_stat(pid)
    return st is None or st[1] in ("Z", "X")


def qemu_argv(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read().decode().split("\0")


def cgroup_limits(dirs):
    """{"memory": bytes, "cpu_millis": n} from an instance's cgroup directories (v1 or v2)."""
    out = {}
    for path in dirs:
        for name, key in (("memory.limit_in_bytes", "memory"), ("memory.max", "memory")):
            if os.path.exists(os.path.join(path, name)):
                out[key] = int(open(os.path.join(path, name)).read())
        if os.path.exists(os.path.join(path, "cpu.cfs_quota_us")):
            quota = int(open(os.path.join(path, "cpu.cfs_quota_us")).read())
            period = int(open(os.path.join(path, "cpu.cfs_period_us")).read())
            out["cpu_millis"] = quota * 1000 // period
        if os.path.exists(os.path.join(path, "cpu.max")):
            quota, period = open(os.path.join(path, "cpu.max")).read().split()
            out["cpu_millis"] = int(quota) * 1000 // int(period)
    return out


def function_logs(daemon, name):
    import urllib.parse
    r = daemon.get("/system/logs?" + urllib.parse.urlencode({"name": name}))
    return r.body.decode("utf-8", "replace")


@unittest.skipUnless(QEMU, "qemu-system-x86_64 is not installed (tools/setup installs qemu-system-x86)")
@unittest.skipUnless(os.path.exists("/boot") and any(n.startswith("vmlinuz-") for n in os.listdir("/boot")),
                     "no kernel in /boot (tools/setup installs linux-image-cloud-amd64)")
@unittest.skipUnless(have_images(), "no microVM images in %s (the build makes them where functions link statically)" % VM_DIR)
class MicrovmTests(DaemonTestCase):
    FLAGS = ("--stem-pool", "0", "--stop-grace-ms", "1000", "--accel=tcg", "--vm-kernel", KERNEL)

    @classmethod
    def setUpClass(cls):
        ensure_kernel()
        super().setUpClass()

    def deploy(self, spec, expect=202):
        r = self.daemon.request("POST", "/system/functions", spec)
        self.assertEqual(r.status, expect, r.body)
        return r

    def test_cold_then_warm(self):
        name = "echo-vm"
        self.deploy(vm_spec(name, initramfs("echo")))
        cold = self.daemon.invoke(name, b"first")
        self.assertEqual((cold.status, cold.body), (200, b"first"))
        # Every byte value crosses the serial port untouched (raw tty: no CR/LF mapping, no
        # echo, no signal characters).
        payload = bytes(range(256)) * 4
        warm = self.daemon.invoke(name, payload)
        self.assertEqual(warm.status, 200, warm.body)
        self.assertEqual(warm.body, payload)
        insts = self.daemon.instances(name)
        self.assertEqual(len(insts), 1, insts)
        self.assertEqual(insts[0]["state"], "warm")
        stats = self.daemon.stats(name)
        self.assertEqual((stats["invocations"]["cold"], stats["invocations"]["warm"]), (1, 1), stats)
        # Held against the node's budget: the guest's RAM and QEMU's own (TCG cache 32 MiB,
        # QEMU 28 MiB).
        info = self.daemon.get("/system/info").json()["faasvisor"]
        self.assertEqual(info["memory_reserved_bytes"], (128 + 32 + 28) << 20, info)
        # The instance's memory is QEMU's resident set: at least a good part of the guest.
        wait_until(lambda: self.daemon.function(name)["usage"]["totalMemoryBytes"] > 16 << 20,
                   scaled(5), "the microVM's memory to be measured")

    def test_every_byte_value_and_large_bodies_over_virtio(self):
        name = "big-vm"
        self.deploy(vm_spec(name, initramfs("echo")))
        small = bytes(range(256))
        r = self.daemon.invoke(name, small)
        self.assertEqual((r.status, r.body), (200, small))
        pid = self.daemon.instances(name)[0]["pid"]
        argv = qemu_argv(qemu_of(pid))
        # The protocol is on the virtio serial port; COM1 is only the kernel's console.
        self.assertIn("virtserialport,chardev=fv,nr=1,name=faasvisor", argv)
        self.assertIn("file:/proc/self/fd/2", argv)
        for size in (1 << 20, 6 << 20):  # 6 MiB: the node's --max-body-bytes
            body = os.urandom(size)
            r = self.daemon.invoke(name, body, timeout=scaled(120))
            self.assertEqual(r.status, 200, r.body[:300])
            self.assertEqual(len(r.body), size)
            self.assertTrue(r.body == body, "the %d-byte body came back changed" % size)
        # One byte over the limit: the node answers 413 without bothering the guest...
        sock = self.daemon.raw_socket(timeout=scaled(60))
        try:
            sock.sendall(b"POST /function/%s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                         % (name.encode(), (6 << 20) + 1))
            try:
                sock.sendall(b"x" * ((6 << 20) + 1))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the node may hang up before reading everything
            self.assertJsonError(RawReader(sock).read_response(), 413, "too large")
        finally:
            sock.close()
        # ...which still serves, warm, the same instance.
        r = self.daemon.invoke(name, small)
        self.assertEqual((r.status, r.body), (200, small))
        self.assertEqual([i["pid"] for i in self.daemon.instances(name)], [pid])
        # The kernel's console (COM1) goes to the function's log, not to the protocol.
        self.assertIn("loaded kernel modules: virtio_ring, virtio, virtio_mmio, virtio_console",
                      function_logs(self.daemon, name))

    def test_serial_transport_still_serves(self):
        # faasvisor.vm.transport=serial: the protocol on COM1 as before virtio (bench/vm
        # measures both); every byte value crosses the raw tty untouched.
        name = "serial-vm"
        self.deploy(vm_spec(name, initramfs("echo"), **{"faasvisor.vm.transport": "serial"}))
        payload = bytes(range(256)) * 4
        r = self.daemon.invoke(name, payload)
        self.assertEqual((r.status, r.body), (200, payload))
        argv = qemu_argv(qemu_of(self.daemon.instances(name)[0]["pid"]))
        self.assertEqual(argv[argv.index("-serial") + 1], "stdio")
        self.assertNotIn("virtio-serial-device,max_ports=2", argv)

    def test_qemu_in_its_own_cgroup_with_the_functions_limits(self):
        name = "limited-vm"
        spec = vm_spec(name, initramfs("echo"))
        spec["limits"]["cpu"] = "500m"
        self.deploy(spec)
        self.assertEqual(self.daemon.invoke(name, b"x").status, 200)
        pid = self.daemon.instances(name)[0]["pid"]
        qemu = qemu_of(pid)
        dirs = cgroup_dirs_of(qemu)
        self.assertTrue(dirs, "QEMU is in no faasvisor cgroup")
        for d in dirs:
            # Its own directory, under this node's subtree, where the sweep of a dead
            # node's state finds it.
            self.assertIn("/faasvisor/node-%d/" % self.daemon.pid, d)
        others = {d for p, st in descendants_of(self.daemon.pid).items()
                  if p != qemu and st[0].startswith("qemu-system") for d in cgroup_dirs_of(p)}
        self.assertFalse(others & set(dirs), "QEMU shares a cgroup with another instance")
        limits = cgroup_limits(dirs)
        # Guest RAM, QEMU's own cost (the TCG cache and QEMU itself: 32 + 28 MiB) and 32 MiB
        # of slack.
        self.assertEqual(limits.get("memory"), (128 + 32 + 28 + 32) << 20, limits)
        self.assertEqual(limits.get("cpu_millis"), 500, limits)

    def test_hash_and_environment(self):
        name = "hash-vm"
        self.deploy(vm_spec(name, initramfs("hash")))
        r = self.daemon.invoke(name, b"abc", query="rounds=1")
        self.assertEqual(r.status, 200, r.body)
        self.assertIn(b"ba7816bf", r.body)  # SHA-256("abc")

    def test_three_concurrent_cold_starts(self):
        # Each TCG microVM is ~1 s of boot and ~200 MiB of RSS: three fit the 2-core machine.
        name = "many-vm"
        self.deploy(vm_spec(name, initramfs("misbehave")))
        results = parallel(lambda i: self.daemon.invoke(name, b"%d" % i, query="mode=slow&ms=300"),
                           [(i,) for i in range(3)], timeout=scaled(90))
        for i, r in enumerate(results):
            self.assertNotIsInstance(r, BaseException)
            self.assertEqual((r.status, r.body), (200, b"%d" % i))
        # Three guests booted (an early one may also serve a later request once free).
        self.assertEqual(len(self.daemon.instances(name)), 3)

    def test_crash_mid_invocation_502_and_no_qemu_left(self):
        name = "crash-vm"
        self.deploy(vm_spec(name, initramfs("misbehave")))
        ok = self.daemon.invoke(name, b"x")
        self.assertEqual(ok.status, 200, ok.body)
        pid = self.daemon.instances(name)[0]["pid"]
        qemu = qemu_of(pid)
        self.assertIsNotNone(qemu, "no QEMU in the instance's sandbox")
        r = self.daemon.invoke(name, b"x", query="mode=crash")
        self.assertEqual(r.status, 502, r.body)
        self.daemon.assert_process_gone(pid)
        wait_until(lambda: dead(qemu), scaled(5), "the crashed guest's QEMU to go")
        # /init said how the function ended, on the protocol stream, as a LOG frame.
        wait_until(lambda: "killed by signal ABRT" in function_logs(self.daemon, name), scaled(5),
                   "the guest agent's report of the crash in the function's log")
        again = self.daemon.invoke(name, b"y")
        self.assertEqual((again.status, again.body), (200, b"y"))
        self.assertTrue(self.daemon.healthy())

    def test_hang_504_and_qemu_killed(self):
        name = "hang-vm"
        # The deadline counts from arrival, boot included: boot one guest first (scale.min).
        spec = vm_spec(name, initramfs("misbehave"), **{"faasvisor.timeout": "2s"})
        spec["labels"] = {"com.openfaas.scale.min": "1"}
        self.deploy(spec)
        self.daemon.wait_warm(name, 1, timeout=scaled(30))
        ok = self.daemon.invoke(name, b"x")
        self.assertEqual(ok.status, 200, ok.body)
        pid = self.daemon.instances(name)[0]["pid"]
        r = self.daemon.invoke(name, b"x", query="mode=hang")
        self.assertEqual(r.status, 504, r.body)
        self.daemon.assert_process_gone(pid)

    def test_function_dies_at_boot_502(self):
        name = "dies-vm"
        spec = vm_spec(name, initramfs("misbehave"))
        spec["envVars"] = {"FV_TEST_CRASH_AT_START": "1"}
        self.deploy(spec)
        r = self.daemon.invoke(name, b"x")
        self.assertEqual(r.status, 502, r.body)
        self.assertIn(b"exited", r.body)
        wait_until(lambda: "exited with status 1" in function_logs(self.daemon, name), scaled(5),
                   "the guest agent's report in the function's log")
        wait_until(lambda: not self.daemon.instances(name), scaled(10), "the failed instance to go")

    def test_guest_kernel_panic_502(self):
        # /init exits at once: "Kernel panic - not syncing: Attempted to kill init", then
        # panic=-1 and reboot=t end the guest and -no-reboot ends QEMU.
        name = "panic-vm"
        self.deploy(vm_spec(name, initramfs("panic"), process="/init"))
        r = self.daemon.invoke(name, b"x")
        self.assertEqual(r.status, 502, r.body)
        self.assertIn(b"exited", r.body)
        # The log tail quoted is the panic's last words (x86 prints the kernel offset on panic).
        self.assertIn(b"Kernel Offset", r.body)
        wait_until(lambda: not self.daemon.instances(name), scaled(10), "the panicked guest's QEMU to go")

    def test_never_ready_boot_timeout_502(self):
        name = "silent-vm"
        spec = vm_spec(name, initramfs("misbehave"), **{"faasvisor.boot_timeout": "6s"})
        spec["envVars"] = {"FV_TEST_NO_READY": "1"}
        self.deploy(spec)
        r = self.daemon.invoke(name, b"x")
        self.assertEqual(r.status, 502, r.body)
        self.assertIn(b"did not become ready", r.body)
        wait_until(lambda: not self.daemon.instances(name), scaled(10), "the QEMU of the instance to go")

    def test_kernel_modules_in_the_image_are_loaded(self):
        release = open(os.path.join(VM_DIR, "vmlinux.release")).read().strip()
        if not os.path.exists("/lib/modules/%s/modules.dep" % release):
            self.skipTest("no modules of the guest kernel %s on this host" % release)
        image = os.path.join(VM_DIR, "echo-modules.initramfs")
        subprocess.run([os.path.join(ROOT, "tools", "mkinitramfs"),
                        "--init", os.path.join(IMAGE_BUILD, "src", "faasvisor-vminit"),
                        "--file", os.path.join(IMAGE_BUILD, "examples", "echo", "echo"),
                        "--module", "virtio_mmio", "--out", image], check=True)
        name = "mods-vm"
        self.deploy(vm_spec(name, image, process="/echo"))
        r = self.daemon.invoke(name, b"with modules")
        self.assertEqual((r.status, r.body), (200, b"with modules"))
        # /init loads them in dependency order before the function starts (and fails the
        # boot if one does not load).
        self.assertIn("loaded kernel modules: virtio_ring, virtio, virtio_mmio", function_logs(self.daemon, name))

    def test_bad_deployments_400(self):
        cases = [
            ("limits.memory", vm_spec("small", initramfs("echo"), memory="64Mi")),
            ("image", vm_spec("notcpio", KERNEL, process="/echo")),
            ("image", vm_spec("dir", VM_DIR, process="/echo")),
            ("envProcess", vm_spec("nocmd", initramfs("echo"), process="/bin/sh")),
            ("envProcess", vm_spec("relcmd", initramfs("echo"), process="echo")),
            ("envVars", dict(vm_spec("bigenv", initramfs("echo")), envVars={"BIG": "x" * 3000})),
            ("image", vm_spec("in-tmp", "/tmp/echo.initramfs", process="/echo")),
            ("annotations.faasvisor.vm.transport",
             vm_spec("badio", initramfs("echo"), **{"faasvisor.vm.transport": "pci"})),
            # The unikernel backend boots PVH ELF images only: a static Linux program is an
            # ELF without the PVH note, an initramfs is not an ELF at all.
            ("image", vm_spec("uk-elf", os.path.join(IMAGE_BUILD, "examples", "echo", "echo"),
                              backend="unikernel", process="/echo")),
            ("image", vm_spec("uk-cpio", initramfs("echo"), backend="unikernel", process="/echo")),
        ]
        for field, spec in cases:
            with self.subTest(field=field, service=spec["service"]):
                r = self.daemon.request("POST", "/system/functions", spec)
                self.assertJsonError(r, 400, "'%s'" % field)
        names = [f["name"] for f in self.daemon.get("/system/functions").json()]
        self.assertFalse(set(names) & {s["service"] for _, s in cases}, names)

    def test_system_info_names_qemu_kernel_and_accelerator(self):
        backends = {b["name"]: b for b in self.daemon.get("/system/info").json()["faasvisor"]["backends"]}
        vm = backends["microvm"]
        self.assertTrue(vm["available"], vm)
        self.assertEqual(vm["kernel"], KERNEL)
        self.assertEqual(vm["accelerator"], "tcg")
        self.assertEqual(vm["accelerator_why"], "chosen by --accel=tcg")
        self.assertEqual(vm["min_memory"], "96Mi")
        self.assertTrue(backends["unikernel"]["available"], backends["unikernel"])

    def test_unikernel_that_never_speaks_times_out(self):
        # Any PVH ELF boots; the host kernel prints its boot log on COM1 and never sends
        # READY: the boot deadline kills QEMU, the invocation gets a 502 with the console's
        # last words, and no process is left.
        name = "uk-silent"
        self.deploy(vm_spec(name, KERNEL, backend="unikernel", process="/kernel", memory="96Mi",
                            **{"faasvisor.boot_timeout": "3s"}))
        r = self.daemon.invoke(name, b"x")
        self.assertEqual(r.status, 502, r.body)
        self.assertIn(b"did not become ready", r.body)
        wait_until(lambda: not self.daemon.instances(name), scaled(10), "the unikernel's QEMU to go")


def unikernel_image(name):
    return os.path.join(UNIKERNEL_DIR, name + ".uk")


@unittest.skipUnless(QEMU, "qemu-system-x86_64 is not installed")
@unittest.skipUnless(os.path.exists(unikernel_image("echo")),
                     "no unikernel images in %s (the unikernel kit builds them)" % UNIKERNEL_DIR)
class UnikernelTests(DaemonTestCase):
    FLAGS = ("--stem-pool", "0", "--stop-grace-ms", "1000", "--accel=tcg")

    def deploy(self, name, image):
        r = self.daemon.request("POST", "/system/functions",
                                vm_spec(name, unikernel_image(image), backend="unikernel",
                                        process="/" + image, memory="8Mi"))
        self.assertEqual(r.status, 202, r.body)

    def test_cold_then_warm(self):
        for fn in ("echo", "hash"):
            self.deploy(fn + "-uk", fn)
        cold = self.daemon.invoke("echo-uk", b"first")
        self.assertEqual((cold.status, cold.body), (200, b"first"))
        warm = self.daemon.invoke("echo-uk", b"second")
        self.assertEqual((warm.status, warm.body), (200, b"second"))
        self.assertEqual(len(self.daemon.instances("echo-uk")), 1)
        h = self.daemon.invoke("hash-uk", b"abc", query="rounds=1")
        self.assertEqual(h.status, 200, h.body)
        self.assertIn(b"ba7816bf", h.body)

    def test_concurrent_cold_starts(self):
        name = "echo-uk-many"
        self.deploy(name, "echo")
        results = parallel(lambda i: self.daemon.invoke(name, b"%d" % i), [(i,) for i in range(4)],
                           timeout=scaled(60))
        for i, res in enumerate(results):
            self.assertNotIsInstance(res, BaseException)
            self.assertEqual((res.status, res.body), (200, b"%d" % i))

    @unittest.skipUnless(os.path.exists(unikernel_image("fault")), "no fault.uk")
    def test_guest_fault_502_and_no_qemu_left(self):
        name = "fault-uk"
        self.deploy(name, "fault")
        ok = self.daemon.invoke(name, b"x")
        self.assertEqual((ok.status, ok.body), (200, b"x"))
        pid = self.daemon.instances(name)[0]["pid"]
        r = self.daemon.invoke(name, b"x", query="mode=null")
        self.assertEqual(r.status, 502, r.body)
        self.daemon.assert_process_gone(pid)
        again = self.daemon.invoke(name, b"y")
        self.assertEqual((again.status, again.body), (200, b"y"))

    @unittest.skipUnless(os.path.exists(unikernel_image("fault")), "no fault.uk")
    def test_hang_504_and_qemu_killed(self):
        name = "hang-uk"
        r = self.daemon.request("POST", "/system/functions",
                                vm_spec(name, unikernel_image("fault"), backend="unikernel", process="/fault",
                                        memory="8Mi", **{"faasvisor.timeout": "2s"}))
        self.assertEqual(r.status, 202, r.body)
        ok = self.daemon.invoke(name, b"x")
        self.assertEqual((ok.status, ok.body), (200, b"x"))
        pid = self.daemon.instances(name)[0]["pid"]
        start = time.monotonic()
        r = self.daemon.invoke(name, b"x", query="mode=hang")
        self.assertEqual(r.status, 504, r.body)
        self.assertLess(time.monotonic() - start, scaled(10))
        self.daemon.assert_process_gone(pid)
        again = self.daemon.invoke(name, b"y")
        self.assertEqual((again.status, again.body), (200, b"y"))


def cpu_seconds(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@unittest.skipUnless(QEMU, "qemu-system-x86_64 is not installed")
@unittest.skipUnless(os.path.exists(unikernel_image("echo")),
                     "no unikernel images in %s (the unikernel kit builds them)" % UNIKERNEL_DIR)
class UnikernelVirtioTests(DaemonTestCase):
    """The unikernel's protocol on its virtio console (unikernel/virtio_console.h), through the
    real node: byte values, bodies up to the node's 6 MiB limit, what is over a limit, crash
    reports on COM1 reaching the function's log, and an idle guest that costs no CPU."""
    FLAGS = ("--stem-pool", "0", "--stop-grace-ms", "1000", "--accel=tcg")

    def deploy(self, name, image="echo", memory="8Mi"):
        r = self.daemon.request("POST", "/system/functions",
                                vm_spec(name, unikernel_image(image), backend="unikernel",
                                        process="/" + image, memory=memory))
        self.assertEqual(r.status, 202, r.body)

    def test_every_byte_value_round_trips(self):
        name = "echo-uk-bytes"
        self.deploy(name)
        for value in range(256):
            body = bytes([value])
            r = self.daemon.invoke(name, body)
            self.assertEqual((r.status, r.body), (200, body), "byte 0x%02x" % value)
        body = bytes(range(256)) * 1024  # 256 KiB, every value at every offset mod 256
        r = self.daemon.invoke(name, body)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, body)
        self.assertEqual(len(self.daemon.instances(name)), 1)

    def test_1_mib_and_6_mib_bodies(self):
        name = "echo-uk-big"
        self.deploy(name, memory="16Mi")  # as tools/deploy-examples deploys echo-unikernel
        for size in (1 << 20, 6 << 20):  # 6 MiB: the node's default --max-body-bytes
            body = os.urandom(size)
            r = self.daemon.invoke(name, body, timeout=scaled(60))
            self.assertEqual(r.status, 200, r.body[:200])
            self.assertTrue(r.body == body, "%d-byte body came back different" % size)
            self.assertEqual(r.header("X-Faasvisor-Start"), "cold" if size == 1 << 20 else "warm")

    def test_body_over_the_node_limit_413_and_the_guest_serves_on(self):
        name = "echo-uk-limit"
        self.deploy(name, memory="32Mi")
        self.assertEqual(self.daemon.invoke(name, b"first").status, 200)
        pid = self.daemon.instances(name)[0]["pid"]
        body = b"x" * ((6 << 20) + 1)
        s = self.daemon.raw_socket(scaled(60))
        try:
            try:
                s.sendall(b"POST /function/%s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                          % (name.encode(), len(body)) + body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the node answers on the declared length and may hang up first
            r = RawReader(s).read_response()
        finally:
            s.close()
        self.assertEqual(r.status, 413, r.body[:200])
        self.assertIn("error", r.json())
        again = self.daemon.invoke(name, b"after")
        self.assertEqual((again.status, again.body), (200, b"after"))
        self.assertEqual([i["pid"] for i in self.daemon.instances(name)], [pid])

    def test_body_over_the_guest_memory_413_from_the_guest_and_it_serves_on(self):
        name = "echo-uk-small"
        self.deploy(name, memory="2Mi")
        self.assertEqual(self.daemon.invoke(name, b"first").status, 200)
        pid = self.daemon.instances(name)[0]["pid"]
        r = self.daemon.invoke(name, os.urandom(3 << 20), timeout=scaled(60))
        self.assertEqual(r.status, 413, r.body[:200])
        self.assertIn("memory", r.json()["error"])
        again = self.daemon.invoke(name, b"after")
        self.assertEqual((again.status, again.body), (200, b"after"))
        self.assertEqual([i["pid"] for i in self.daemon.instances(name)], [pid])

    @unittest.skipUnless(os.path.exists(unikernel_image("fault")), "no fault.uk")
    def test_crash_report_on_com1_reaches_the_502_and_the_log(self):
        name = "fault-uk-report"
        self.deploy(name, image="fault")
        self.assertEqual(self.daemon.invoke(name, b"x").status, 200)
        pid = self.daemon.instances(name)[0]["pid"]
        r = self.daemon.invoke(name, b"x", query="mode=ud2")
        self.assertEqual(r.status, 502, r.body)
        self.assertIn(b"CPU exception: invalid opcode", r.body)
        self.daemon.assert_process_gone(pid)
        wait_until(lambda: "CPU exception: invalid opcode" in function_logs(self.daemon, name),
                   scaled(10), "the crash report in the function's log")

    def test_idle_guest_uses_no_cpu(self):
        name = "echo-uk-idle"
        self.deploy(name)
        self.assertEqual(self.daemon.invoke(name, b"x" * 100000).status, 200)
        pid = self.daemon.instances(name)[0]["pid"]
        before = cpu_seconds(pid)
        time.sleep(3)
        used = cpu_seconds(pid) - before
        self.assertLess(used, 0.2, "the idle guest's QEMU used %.2f s of CPU in 3 s" % used)


@unittest.skipUnless(QEMU, "qemu-system-x86_64 is not installed")
class AcceleratorProbeTests(unittest.TestCase):
    """--accel=auto: the node decides at start, off its loop, and says why; a broken
    /dev/kvm (as on the development machines) must fall back to TCG, not hang guests."""

    def test_auto_decides_and_says_why(self):
        ensure_kernel()
        d = Daemon("--stem-pool", "0", "--accel=auto", "--vm-kernel", KERNEL).start()
        try:
            vm = {b["name"]: b for b in d.get("/system/info").json()["faasvisor"]["backends"]}["microvm"]
            self.assertIn(vm["accelerator"], ("kvm", "tcg"), vm)
            if not os.path.exists("/dev/kvm"):
                self.assertEqual((vm["accelerator"], vm["accelerator_why"]), ("tcg", "no /dev/kvm on this host"))
            else:
                self.assertNotIn("probing", vm["accelerator_why"])
                self.assertIn("kvm", vm["accelerator_why"])
            if have_images():
                r = d.request("POST", "/system/functions", vm_spec("echo-auto", initramfs("echo")))
                self.assertEqual(r.status, 202, r.body)
                r = d.invoke("echo-auto", b"auto")
                self.assertEqual((r.status, r.body), (200, b"auto"))
        finally:
            problems = d.stop()
        self.assertEqual(problems, [])

    def test_missing_qemu_and_kernel_400_says_why(self):
        d = Daemon("--stem-pool", "0", "--qemu", "/nonexistent/qemu-system-x86_64").start()
        try:
            backends = {b["name"]: b for b in d.get("/system/info").json()["faasvisor"]["backends"]}
            for name in ("microvm", "unikernel"):
                self.assertFalse(backends[name]["available"])
                self.assertIn("QEMU", backends[name]["why_not"])
            r = d.request("POST", "/system/functions", vm_spec("no-qemu", initramfs("echo")))
            self.assertEqual(r.status, 400, r.body)
            self.assertIn(b"cannot run on this host", r.body)
            self.assertIn(b"QEMU", r.body)
        finally:
            problems = d.stop()
        self.assertEqual(problems, [])
        d = Daemon("--stem-pool", "0", "--vm-kernel", "/nonexistent/vmlinux").start()
        try:
            backends = {b["name"]: b for b in d.get("/system/info").json()["faasvisor"]["backends"]}
            self.assertFalse(backends["microvm"]["available"])
            self.assertIn("/nonexistent/vmlinux", backends["microvm"]["why_not"])
            self.assertTrue(backends["unikernel"]["available"])
            r = d.request("POST", "/system/functions", vm_spec("no-kernel", initramfs("echo")))
            self.assertEqual(r.status, 400, r.body)
            self.assertIn(b"kernel", r.body)
        finally:
            problems = d.stop()
        self.assertEqual(problems, [])


@unittest.skipUnless(QEMU, "qemu-system-x86_64 is not installed")
@unittest.skipUnless(have_images(), "no microVM images in %s" % VM_DIR)
@unittest.skipUnless(os.path.exists(unikernel_image("echo")), "no unikernel images in %s" % UNIKERNEL_DIR)
class NodeKilledTests(unittest.TestCase):
    """Issue 16, defect 4: a SIGKILLed node must leave no QEMU running. Each QEMU is in a
    sandbox that has a parent-death signal; QEMU is in the sandbox's pid namespace."""

    def test_sigkill_of_the_node_kills_every_qemu(self):
        ensure_kernel()
        d = Daemon("--stem-pool", "0", "--accel=tcg", "--vm-kernel", KERNEL).start()
        qemus = []
        try:
            for spec in (vm_spec("echo-vm", initramfs("echo")),
                         vm_spec("echo-uk", unikernel_image("echo"), backend="unikernel",
                                 process="/echo", memory="8Mi")):
                r = d.request("POST", "/system/functions", spec)
                self.assertEqual(r.status, 202, r.body)
                r = d.invoke(spec["service"], b"alive", timeout=scaled(90))
                self.assertEqual((r.status, r.body), (200, b"alive"))
                qemu = qemu_of(d.instances(spec["service"])[0]["pid"])
                self.assertIsNotNone(qemu)
                qemus.append(qemu)
            d.record_children()
            d.proc.send_signal(signal.SIGKILL)
            d.finish(timeout=scaled(10))  # the cgroups are left for the next node's sweep
            wait_until(lambda: all(dead(p) for p in qemus), scaled(10),
                       "the QEMU processes %s to die with the node" % qemus)
        finally:
            if d.proc is not None and d.proc.poll() is None:
                d.proc.kill()
                d.finish(timeout=scaled(10))
            # Orphans (stems, QEMU) were re-parented to us, the subreaper: reap them.
            deadline = time.monotonic() + scaled(5)
            while time.monotonic() < deadline:
                try:
                    if os.waitpid(-1, os.WNOHANG) == (0, 0):
                        time.sleep(0.05)
                except ChildProcessError:
                    break


def probe_verdict(daemon):
    """The microvm backend's /system/info entry once the KVM probe has decided."""
    def decided():
        vm = {b["name"]: b for b in daemon.get("/system/info").json()["faasvisor"]["backends"]}["microvm"]
        return vm if "probing" not in vm.get("accelerator_why", vm.get("why_not", "")) else None
    return wait_until(decided, scaled(15), "the KVM probe's verdict")


@unittest.skipUnless(QEMU, "qemu-system-x86_64 is not installed")
class KvmTests(unittest.TestCase):
    """The KVM-only paths. They run where /dev/kvm runs guests; the development machines'
    /dev/kvm does not (a Linux guest prints nothing under -accel kvm), so there
    test_guests_under_kvm skips, saying so, and test_forced_kvm_fails_loudly checks that
    --accel=kvm makes the VM backends unavailable rather than falling back to TCG."""

    def start(self, accel):
        """A daemon with --accel=accel once its probe has decided, stopped (and checked for
        leaks) at the test's end; and its microvm backend's /system/info entry."""
        ensure_kernel()
        d = Daemon("--stem-pool", "0", "--accel=" + accel, "--vm-kernel", KERNEL).start()

        def stop():
            self.assertEqual(d.stop(), [])
        self.addCleanup(stop)
        vm = probe_verdict(d)
        d._take_baseline()  # without the probe's descriptors
        return d, vm

    def test_forced_kvm_fails_loudly(self):
        d, vm = self.start("kvm")
        if vm["available"]:
            self.assertEqual(vm["accelerator"], "kvm", vm)
            self.skipTest("KVM runs guests on this host: test_guests_under_kvm covers --accel=kvm")
        self.assertIn("--accel=kvm", vm["why_not"])
        self.assertNotIn("tcg", json.dumps(vm))
        r = d.request("POST", "/system/functions", vm_spec("echo-kvm", initramfs("echo")))
        self.assertEqual(r.status, 400, r.body)
        self.assertIn(b"--accel=kvm", r.body)
        self.assertTrue(d.healthy())

    def test_guests_under_kvm(self):
        d, vm = self.start("auto")
        if vm["accelerator"] != "kvm":
            self.skipTest("KVM does not run guests on this host: " + vm["accelerator_why"])
        specs = [vm_spec("echo-kvm", initramfs("echo"))]
        if os.path.exists(unikernel_image("echo")):
            specs.append(vm_spec("echo-uk-kvm", unikernel_image("echo"), backend="unikernel",
                                 process="/echo", memory="8Mi"))
        for spec in specs:
            r = d.request("POST", "/system/functions", spec)
            self.assertEqual(r.status, 202, r.body)
            body = os.urandom(1 << 20)
            r = d.invoke(spec["service"], body, timeout=scaled(60))
            self.assertEqual(r.status, 200, r.body[:300])
            self.assertTrue(r.body == body)
            argv = qemu_argv(qemu_of(d.instances(spec["service"])[0]["pid"]))
            self.assertEqual(argv[argv.index("-accel") + 1], "kvm")
            self.assertIn("host", argv)  # -cpu host
        # Under KVM the node holds no TCG translation cache against its budget.
        info = d.get("/system/info").json()["faasvisor"]
        self.assertEqual(info["memory_reserved_bytes"],
                         ((128 + 28) << 20) + (((8 + 28) << 20) if len(specs) > 1 else 0), info)
