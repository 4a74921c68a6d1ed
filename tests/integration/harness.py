"""Test harness for faasvisord integration tests (Python 3 stdlib only).

Starts a real daemon on an ephemeral port, talks HTTP to it (http.client and raw sockets),
deploys the test functions, and checks after shutdown that the daemon left nothing behind:
no child process, no cgroup directory, no descriptor and no /tmp entry.

Leak checking works from three vantage points:
  * a sampler thread records every process below the daemon (sandboxes, instances and
    their function processes: pid, start time, cgroup directories) while it runs, and so
    does every GET /system/function;
  * this process makes itself a child subreaper, so any process the daemon leaves behind when
    it exits is re-parented to us, where it is easy to spot (even as a zombie);
  * before SIGTERM the daemon's descriptors and cgroup subtrees are compared with a baseline
    taken right after start-up, once every function is deleted and the stem pool is full.

Environment: FV_BUILD (build directory, set by run.py), FV_TIME_SCALE (multiplies every
deadline; run.py raises it for sanitizer builds).
"""

import ctypes
import http.client
import json
import os
import re
import base64
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.abspath(os.environ.get("FV_BUILD", os.path.join(ROOT, "build")))
TIME_SCALE = float(os.environ.get("FV_TIME_SCALE", "1"))

DAEMON = os.path.join(BUILD, "src", "faasvisord")
ECHO_IMAGE = os.path.join(BUILD, "examples", "echo")
HASH_IMAGE = os.path.join(BUILD, "examples", "hash")
MISBEHAVE_IMAGE = os.path.join(BUILD, "tests", "functions")
PYECHO_IMAGE = os.path.join(ROOT, "examples", "pyecho")
PYECHO_PROCESS = "/usr/bin/python3 ../../runtimes/python/faasvisor_runtime.py handler"
# Python test functions under tests/integration/functions, run by the Python runtime:
#   slowboot  sleeps FV_BOOT_DELAY_MS (default 1000) before READY, then echoes;
#   reqinfo   answers with the request it saw, as JSON (?set=NAME:VALUE adds a header).
FUNCTIONS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "functions")
PYTHON_TEST_PROCESS = "/usr/bin/python3 -B ../../../../runtimes/python/faasvisor_runtime.py handler"
SLOWBOOT_IMAGE = os.path.join(FUNCTIONS_DIR, "slowboot")
SLOWBOOT_PROCESS = PYTHON_TEST_PROCESS
REQINFO_IMAGE = os.path.join(FUNCTIONS_DIR, "reqinfo")
REQINFO_PROCESS = PYTHON_TEST_PROCESS



def default_stem_pool():
    """The daemon's default --stem-pool, read from NodeOptions in the public header (the
    tests must know how many sandboxes a healthy idle node keeps)."""
    header = os.path.join(ROOT, "include", "faasvisor", "node.h")
    try:
        with open(header) as f:
            m = re.search(r"stem_pool_size\s*=\s*(\d+)", f.read())
        if m:
            return int(m.group(1))
    except OSError:
        pass
    return 16


DEFAULT_STEM_POOL = default_stem_pool()
CGROUP_CONTROLLERS = ("memory", "cpu", "pids")
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ThreadSanitizer", "Assertion `", "assertion failed")


def scaled(seconds):
    """A deadline in seconds, stretched for slow (sanitizer) builds."""
    return seconds * TIME_SCALE


def become_subreaper():
    """Orphans of the daemon are re-parented to us instead of init, so leaks are visible."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except OSError:
        return False


SUBREAPER = become_subreaper()


def wait_until(predicate, timeout, what, interval=0.02):
    """Polls predicate() until it returns a truthy value; fails the test with `what` otherwise."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


# --- /proc ------------------------------------------------------------------------------

def proc_stat(pid):
    """(comm, state, ppid, starttime) of a process, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may contain spaces and parentheses: it ends at the last ')'.
    close = data.rfind(")")
    comm = data[data.find("(") + 1:close]
    fields = data[close + 2:].split()
    return comm, fields[0], int(fields[1]), int(fields[19])


def process_table():
    """{pid: (comm, state, ppid, starttime)} of every process, from one /proc scan."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st is not None:
                table[int(name)] = st
    return table


def children_of(ppid, table=None):
    """{pid: (comm, state, starttime)} of the direct children of ppid."""
    table = process_table() if table is None else table
    return {pid: (st[0], st[1], st[3]) for pid, st in table.items() if st[2] == ppid}


def descendants_of(root, table=None):
    """{pid: (comm, state, starttime, parent)} of every process below root."""
    table = process_table() if table is None else table
    kids = {}
    for pid, st in table.items():
        kids.setdefault(st[2], []).append(pid)
    out = {}
    todo = list(kids.get(root, []))
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        st = table[pid]
        out[pid] = (st[0], st[1], st[3], st[2])
        todo.extend(kids.get(pid, []))
    return out


def cgroup_dirs_of(pid):
    """The v1 memory/cpu/pids (or v2 unified) cgroup directories the process is in."""
    dirs = []
    try:
        with open("/proc/%d/cgroup" % pid) as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return dirs
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3 or "faasvisor" not in parts[2]:
            continue
        controllers = parts[1].split(",")
        if parts[1] == "":
            dirs.append("/sys/fs/cgroup" + parts[2])
        for c in controllers:
            if c in CGROUP_CONTROLLERS:
                dirs.append("/sys/fs/cgroup/%s%s" % (c, parts[2]))
    return dirs


def process_alive(pid, starttime=None):
    """True if pid exists (and, given starttime, is still the same process)."""
    st = proc_stat(pid)
    if st is None:
        return False
    return starttime is None or st[3] == starttime


def fd_summary(pid):
    """{kind: count} of a process's descriptors (pipe, socket, anon_inode:[...], file...)."""
    counts = {}
    try:
        names = os.listdir("/proc/%d/fd" % pid)
    except FileNotFoundError:
        return None
    for fd in names:
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        kind = re.sub(r"[:\[].*$", "", target) if not target.startswith("anon_inode:") else target
        if target.startswith("/"):
            kind = "file:" + target
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def open_sockets(pid):
    summary = fd_summary(pid) or {}
    return summary.get("socket", 0)


def remove_cgroup_trees(roots):
    """Removes a dead daemon's node-<pid> cgroup subtrees (the next daemon would, too)."""
    for root in roots:
        deadline = time.monotonic() + scaled(5)
        while os.path.isdir(root):
            for name in os.listdir(root):
                path = os.path.join(root, name)
                if os.path.isdir(path):
                    try:
                        os.rmdir(path)
                    except OSError:
                        pass
            try:
                os.rmdir(root)
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)  # members of a SIGKILLed tree still exiting


def tmp_entries(pid=None):
    """Entries in /tmp and /dev/shm that the daemon (or its stems) could have made.

    Other programs share /tmp while the tests run (benchmarks even use "faasvisord-*"
    names), so only names that point at this daemon count: the daemon's pid as a token, or
    a "faasvisor-stem*"/"faasvisor-node*" name."""
    out = set()
    pid_token = re.compile(r"(^|[^0-9a-zA-Z])%d([^0-9a-zA-Z]|$)" % pid) if pid else None
    for d in ("/tmp", "/dev/shm"):
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            continue
        for name in names:
            if (name.lower().startswith(("faasvisor-stem", "faasvisor-node"))
                    or (pid_token is not None and pid_token.search(name))):
                out.add(os.path.join(d, name))
    return out


# --- HTTP -------------------------------------------------------------------------------

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.header_list = headers  # [(name, value)] as received
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<Response %d %r %r>" % (self.status, self.headers, self.body[:200])


class RawReader:
    """Reads HTTP/1.1 responses from a raw socket (the node always sends Content-Length)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by the node")
        self.buf += chunk

    def read_response(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        length = int(dict((k.lower(), v) for k, v in headers).get("content-length", "0"))
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return Response(status, headers, body)

    def at_eof(self, timeout):
        """True if the node closes the connection within timeout with nothing more to say."""
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        if chunk:
            self.buf += chunk
            return False
        return True


def raw_request(method, path, body=b"", headers=None, keep_alive=True):
    """Bytes of one HTTP/1.1 request with Content-Length."""
    if isinstance(body, str):
        body = body.encode()
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: test"]
    for k, v in (headers or {}).items():
        lines.append("%s: %s" % (k, v))
    if body or method in ("POST", "PUT"):
        lines.append("Content-Length: %d" % len(body))
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# --- the daemon -------------------------------------------------------------------------

LIVE_DAEMONS = set()

# Where the tests' images live: the checkout, the build directory, and the temporary
# directories tests make (tempfile's, and /var/tmp for functions that must live outside
# /tmp). Everything else, / and /etc included, the node refuses (docs/security.md).
TEST_IMAGE_ROOTS = tuple(dict.fromkeys([ROOT, BUILD, tempfile.gettempdir(), "/var/tmp"]))


def image_root_flags(roots=TEST_IMAGE_ROOTS):
    flags = []
    for root in roots:
        flags += ["--image-root", root]
    return flags


class BasicAuth:
    """Credentials in a directory of their own, as the OpenFaaS gateway reads them."""

    def __init__(self, user="admin", password="s3cret-for-tests"):
        self.user, self.password = user, password
        self.dir = tempfile.mkdtemp(prefix="fv-auth-")
        for name, value in (("basic-auth-user", user), ("basic-auth-password", password)):
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(value + "\n")  # a trailing newline, as `echo` writes it: trimmed

    def header(self):
        token = base64.b64encode(("%s:%s" % (self.user, self.password)).encode()).decode()
        return "Basic " + token

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class Daemon:
    """One faasvisord on 127.0.0.1:<ephemeral>, with leak tracking."""

    def __init__(self, *flags, auth=None, image_roots=TEST_IMAGE_ROOTS):
        self.flags = list(flags)
        # auth (a BasicAuth): the daemon runs with --basic-auth-dir and every request of ours
        # carries the credentials unless it passes its own Authorization (or auth=False).
        self.auth = auth
        if auth is not None:
            self.flags += ["--basic-auth-dir", auth.dir]
        if image_roots:
            self.flags += image_root_flags(image_roots)
        # A node with --accel=auto boots a probe guest on /dev/kvm at start (2 s and a busy
        # CPU where KVM is broken): only the VM tests that check that ask for it.
        if not any(f == "--accel" or f.startswith("--accel=") for f in self.flags):
            self.flags.append("--accel=tcg")
        # Every daemon gets a state directory of its own, removed when it stops, unless the
        # test passes one (restart tests): daemons run in parallel and must never share
        # /var/lib/faasvisor/state (the node locks it; a second one would fail to start).
        self.own_state_dir = None
        if not any(f == "--state-dir" or f.startswith("--state-dir=") for f in self.flags):
            self.own_state_dir = tempfile.mkdtemp(prefix="fv-state-")
            self.flags += ["--state-dir", self.own_state_dir]
        self.stem_pool = DEFAULT_STEM_POOL
        for i, f in enumerate(self.flags):
            if f == "--stem-pool":
                self.stem_pool = int(self.flags[i + 1])
        self.proc = None
        self.port = None
        self.pid = None
        self.log_lines = []
        self.log_lock = threading.Lock()
        self.seen = {}  # pid -> {"start", "comm", "parent", "cgroups": [dirs]}
        self.seen_lock = threading.Lock()
        self.cgroup_roots = []
        self.baseline_fds = None
        self.tmp_before = set()
        self.exit_code = None
        self._stop_sampler = threading.Event()
        self._listening = threading.Event()
        self._threads = []

    # -- lifecycle --

    def start(self):
        self.tmp_before = tmp_entries()  # before the pid is known: the generic names
        argv = [DAEMON, "--listen", "127.0.0.1:0"] + self.flags
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.pid = self.proc.pid
        LIVE_DAEMONS.add(self.pid)
        t = threading.Thread(target=self._drain_stderr, daemon=True)
        t.start()
        self._threads.append(t)
        deadline = time.monotonic() + scaled(10)
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._kill_hard()
                if self.own_state_dir is not None:
                    shutil.rmtree(self.own_state_dir, ignore_errors=True)
                raise AssertionError("faasvisord did not start (exit %r):\n%s"
                                     % (self.proc.returncode, self.log_text()))
        self.cgroup_roots = ["/sys/fs/cgroup/%s/faasvisor/node-%d" % (c, self.pid)
                             for c in CGROUP_CONTROLLERS]
        if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            self.cgroup_roots = ["/sys/fs/cgroup/faasvisor/node-%d" % self.pid]
        s = threading.Thread(target=self._sample_children, daemon=True)
        s.start()
        self._threads.append(s)
        self._take_baseline()
        info = self.get("/system/info").json()
        self.cgroup_roots = info["faasvisor"].get("cgroup_roots") or []
        return self

    def _drain_stderr(self):
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.log_lock:
                self.log_lines.append(line)
            if self.port is None:
                m = re.search(r"listening on [0-9.]+:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    self._listening.set()
        self.proc.stderr.close()

    def log_text(self, last=60):
        with self.log_lock:
            return "\n".join(self.log_lines[-last:])

    def _sample_children(self):
        while not self._stop_sampler.is_set():
            self.record_children()
            self._stop_sampler.wait(0.03)

    def record_children(self):
        """Records every process below the daemon: stems, instances and function processes."""
        for pid, (comm, _state, start, parent) in descendants_of(self.pid).items():
            self.record_pid(pid, start, comm, parent)

    def record_pid(self, pid, start=None, comm=None, parent=None):
        with self.seen_lock:
            known = self.seen.get(pid)
            if known is not None and (start is None or known["start"] == start):
                if comm is not None:
                    known["comm"] = comm  # exec changes it (runc:[2:INIT] becomes the function)
                if not known["cgroups"]:
                    known["cgroups"] = cgroup_dirs_of(pid)
                return known
        st = proc_stat(pid)
        if st is None:
            return None
        with self.seen_lock:
            ours = st[2] == self.pid or st[2] in self.seen
        if not ours:
            return None
        entry = {"start": st[3], "comm": st[0], "parent": st[2], "cgroups": cgroup_dirs_of(pid)}
        with self.seen_lock:
            self.seen[pid] = entry
        return entry

    def recorded_below(self, pid):
        """Recorded processes below pid (e.g. the function process under its stem)."""
        with self.seen_lock:
            seen = dict(self.seen)
        out, todo = {}, [pid]
        while todo:
            parent = todo.pop()
            for child, entry in seen.items():
                if entry.get("parent") == parent and child not in out:
                    out[child] = entry
                    todo.append(child)
        return out

    def _take_baseline(self):
        """Descriptors once the stem pool is full and no connection is open."""
        wait_until(lambda: len(children_of(self.pid)) >= self.stem_pool, scaled(20),
                   "the stem pool to fill (%d sandboxes)" % self.stem_pool)
        prev = None

        def stable():
            nonlocal prev
            cur = fd_summary(self.pid)
            same = cur == prev
            prev = cur
            return same

        # The KVM probe (--accel=auto) holds a QEMU child and its pipes until it has decided.
        def accelerator_decided():
            backends = self.get("/system/info").json()["faasvisor"]["backends"]
            return not any(b.get("accelerator_why", "").startswith("probing") for b in backends)

        wait_until(accelerator_decided, scaled(10), "the KVM probe to decide")
        wait_until(stable, scaled(10), "the daemon's descriptors to settle", interval=0.05)
        self.baseline_fds = prev

    def _kill_hard(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        LIVE_DAEMONS.discard(self.pid)
        self._stop_sampler.set()

    def settle_problems(self):
        """Deletes every function, then compares descriptors/cgroups with the baseline."""
        problems = []
        try:
            for fn in self.get("/system/functions").json():
                self.request("DELETE", "/system/functions", {"functionName": fn["name"]})
            wait_until(lambda: self.get("/system/info").json()["faasvisor"]["instances"] == 0,
                       scaled(15), "every instance to stop after deleting all functions")
        except AssertionError as e:
            return [str(e)]
        try:
            wait_until(lambda: len(children_of(self.pid)) == self.stem_pool, scaled(10),
                       "only the %d stems to remain as children" % self.stem_pool)
        except AssertionError as e:
            problems.append("%s; children now: %r" % (e, children_of(self.pid)))
        try:
            wait_until(lambda: fd_summary(self.pid) == self.baseline_fds, scaled(10),
                       "the daemon's descriptors to return to the baseline", interval=0.05)
        except AssertionError as e:
            problems.append("%s: baseline %r, now %r" % (e, self.baseline_fds, fd_summary(self.pid)))
        # Each root may hold only the cgroups of the live stems (instance cgroups are removed
        # once their process is reaped, with retries: poll).
        def stray_cgroups():
            live = set()
            for pid in children_of(self.pid):
                live.update(cgroup_dirs_of(pid))
            extra = {}
            for root in self.cgroup_roots:
                try:
                    subdirs = {os.path.join(root, n) for n in os.listdir(root)
                               if os.path.isdir(os.path.join(root, n))}
                except FileNotFoundError:
                    continue
                if subdirs - live:
                    extra[root] = sorted(subdirs - live)
            return extra

        try:
            wait_until(lambda: not stray_cgroups(), scaled(5), "instance cgroups to be removed")
        except AssertionError:
            for root, dirs in stray_cgroups().items():
                problems.append("cgroup directories without a live process under %s: %s"
                                % (root, dirs))
        return problems

    def stop(self, sig=signal.SIGTERM, timeout=None, settle=True):
        """Stops the daemon with sig; returns a list of problems (empty = clean)."""
        problems = []
        if self.proc is None:
            return problems
        if settle and self.proc.poll() is None:
            problems += self.settle_problems()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        problems += self.finish(timeout)
        return problems

    def finish(self, timeout=None):
        """Waits for the daemon to exit (after a signal was sent) and checks for leftovers."""
        problems = []
        try:
            self.exit_code = self.proc.wait(timeout if timeout is not None else scaled(20))
        except subprocess.TimeoutExpired:
            problems.append("daemon did not exit within the timeout; killed")
            self._kill_hard()
            self.exit_code = self.proc.returncode
        LIVE_DAEMONS.discard(self.pid)
        self._stop_sampler.set()
        for t in self._threads:
            t.join(scaled(5))
        if self.exit_code != 0:
            problems.append("daemon exited with %r, expected 0" % self.exit_code)
        problems += self.leak_problems()
        if self.exit_code != 0:
            remove_cgroup_trees(self.cgroup_roots)  # a crashed daemon's leftovers
        if self.own_state_dir is not None:
            shutil.rmtree(self.own_state_dir, ignore_errors=True)
        self.proc = None
        return problems

    def leak_problems(self):
        problems = []
        # Orphans re-parented to us (the subreaper). Only what came from the daemon counts:
        # a process recorded below it, or one still named after it (a sandbox that died
        # before it could exec faasvisor-stem is a "faasvisord" zombie). Other children of
        # the test process are none of our business.
        if SUBREAPER:
            with self.seen_lock:
                recorded = {pid: e["start"] for pid, e in self.seen.items()}
            for pid, (comm, state, start) in children_of(os.getpid()).items():
                if pid in LIVE_DAEMONS or pid == self.pid:
                    continue
                if recorded.get(pid) != start and not comm.startswith("faasvisor"):
                    continue
                problems.append("orphan process %d (%s, state %s) outlived the daemon"
                                % (pid, comm, state))
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
        with self.seen_lock:
            seen = dict(self.seen)
        for pid, entry in seen.items():
            if process_alive(pid, entry["start"]):
                problems.append("instance/stem process %d (%s) survived the daemon"
                                % (pid, entry["comm"]))
            for d in entry["cgroups"]:
                if os.path.exists(d):
                    problems.append("cgroup %s of process %d survived the daemon" % (d, pid))
        for root in self.cgroup_roots:
            if os.path.exists(root):
                problems.append("cgroup root %s survived the daemon" % root)
        extra = tmp_entries(self.pid) - self.tmp_before
        if extra:
            problems.append("new /tmp or /dev/shm entries: %s" % sorted(extra))
        log = self.log_text(last=100000)
        for marker in SANITIZER_MARKERS:
            if marker in log:
                idx = log.find(marker)
                problems.append("daemon log reports %r:\n%s" % (marker, log[max(0, idx - 200):idx + 3000]))
                break
        return problems

    # -- HTTP --

    def connect(self, timeout=None):
        return http.client.HTTPConnection("127.0.0.1", self.port,
                                          timeout=timeout if timeout is not None else scaled(30))

    def request(self, method, path, body=None, headers=None, timeout=None, conn=None):
        """One request; body may be bytes, str, or an object (sent as JSON)."""
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        own = conn is None
        c = conn or self.connect(timeout)
        headers = dict(headers or {})
        if self.auth is not None and not any(k.lower() == "authorization" for k in headers):
            headers["Authorization"] = self.auth.header()
        headers = {k: v for k, v in headers.items() if v is not None}  # None: send none
        try:
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            data = r.read()
            return Response(r.status, r.getheaders(), data)
        finally:
            if own:
                c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def raw_socket(self, timeout=None):
        s = socket.create_connection(("127.0.0.1", self.port),
                                     timeout=timeout if timeout is not None else scaled(30))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    # -- functions --

    def deploy(self, name, image=None, process=None, env=None, memory=None, cpu=None,
               max_instances=None, timeout=None, boot_timeout=None, queue=None,
               method="POST", expect=202):
        spec = deploy_spec(name, image, process, env, memory, cpu, max_instances, timeout,
                           boot_timeout, queue)
        r = self.request(method, "/system/functions", spec)
        if expect is not None and r.status != expect:
            raise AssertionError("deploy %s: expected %d, got %d %r" % (name, expect, r.status, r.body))
        return r

    def invoke(self, name, body=b"", query="", path="", headers=None, method="POST",
               timeout=None, conn=None):
        url = "/function/" + name + path + ("?" + query if query else "")
        return self.request(method, url, body, headers, timeout=timeout, conn=conn)

    def function(self, name):
        """GET /system/function/NAME (records instance pids), or None when 404."""
        r = self.get("/system/function/" + name)
        if r.status == 404:
            return None
        if r.status != 200:
            raise AssertionError("GET function %s: %d %r" % (name, r.status, r.body))
        info = r.json()
        for inst in info["faasvisor"]["instances"]:
            if inst.get("pid", 0) > 0:
                self.record_pid(inst["pid"])
        return info

    def instances(self, name):
        info = self.function(name)
        return [] if info is None else info["faasvisor"]["instances"]

    def instance_pid(self, name, instance_id):
        for inst in self.instances(name):
            if inst["id"] == instance_id:
                return inst["pid"]
        return None

    def stats(self, name=None):
        data = self.get("/system/stats").json()
        return data["functions"].get(name) if name else data

    def scale(self, name, replicas):
        return self.request("POST", "/system/scale-function/" + name,
                            {"serviceName": name, "replicas": replicas})

    def wait_warm(self, name, count, timeout=None):
        def ready():
            insts = self.instances(name)
            return sum(1 for i in insts if i["state"] == "warm") >= count
        wait_until(ready, timeout or scaled(20), "%d warm instances of %s" % (count, name))

    def probe(self):
        """True if the daemon answers /healthz (never raises)."""
        try:
            return self.request("GET", "/healthz", timeout=scaled(5)).status == 200
        except (OSError, http.client.HTTPException):
            return False

    def healthy(self):
        r = self.get("/healthz")
        return r.status == 200 and r.json().get("status") == "ok"

    def assert_process_gone(self, pid, timeout=None):
        """The instance process, everything below it and its cgroup directories disappear
        while the node keeps running."""
        entry = self.record_pid(pid) or self.seen.get(pid)
        self.record_children()
        procs = {pid: entry}
        procs.update(self.recorded_below(pid))
        cgroups = sorted({d for e in procs.values() if e for d in e["cgroups"]})
        for p, e in procs.items():
            start = e["start"] if e else None
            wait_until(lambda: not process_alive(p, start), timeout or scaled(10),
                       "process %d (%s) of the instance to exit" % (p, e["comm"] if e else "?"))
        wait_until(lambda: not any(os.path.exists(d) for d in cgroups), timeout or scaled(10),
                   "the cgroups of instance process %d to be removed: %s" % (pid, cgroups))
        return cgroups


def deploy_spec(name, image=None, process=None, env=None, memory=None, cpu=None,
                max_instances=None, timeout=None, boot_timeout=None, queue=None):
    spec = {"service": name, "image": image or ECHO_IMAGE, "envProcess": process or "./echo"}
    if env:
        spec["envVars"] = env
    limits = {}
    if memory:
        limits["memory"] = memory
    if cpu:
        limits["cpu"] = cpu
    if limits:
        spec["limits"] = limits
    if max_instances is not None:
        spec["labels"] = {"com.openfaas.scale.max": str(max_instances)}
    annotations = {}
    if timeout:
        annotations["faasvisor.timeout"] = timeout
    if boot_timeout:
        annotations["faasvisor.boot_timeout"] = boot_timeout
    if queue is not None:
        annotations["faasvisor.queue"] = str(queue)
    if annotations:
        spec["annotations"] = annotations
    return spec


def misbehave_spec(name, **kw):
    return dict(name=name, image=MISBEHAVE_IMAGE, process="./misbehave", **kw)


def parallel(fn, args_list, timeout=None):
    """Runs fn(*args) for each args on its own thread, all released together.

    Returns the results in order; an exception in a worker is returned in its slot."""
    results = [None] * len(args_list)
    barrier = threading.Barrier(len(args_list))

    def worker(i, args):
        try:
            barrier.wait(scaled(10))
            results[i] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - reported to the test
            results[i] = e

    threads = [threading.Thread(target=worker, args=(i, a), daemon=True)
               for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + (timeout or scaled(60))
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = sum(1 for t in threads if t.is_alive())
    if stuck:
        raise AssertionError("%d of %d parallel calls did not finish in time" % (stuck, len(threads)))
    return results


class DaemonTestCase(unittest.TestCase):
    """A test class sharing one daemon; tearDownClass stops it and fails on any leak.

    If the daemon dies during a test, that test fails (with the daemon's last words) and a
    fresh daemon is started for the rest of the class, so one crash is reported once."""

    FLAGS = ()
    daemon = None

    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon(*cls.FLAGS).start()
        cls.prepare_daemon()

    @classmethod
    def prepare_daemon(cls):
        """Deploys what the class's tests share (called again after a restart)."""

    @classmethod
    def tearDownClass(cls):
        d, cls.daemon = cls.daemon, None
        if d is None:
            return
        problems = d.stop()
        if problems:
            raise AssertionError("%s: daemon shutdown/leak check failed:\n  - %s\n--- daemon log tail ---\n%s"
                                 % (cls.__name__, "\n  - ".join(problems), d.log_text()))

    def setUp(self):
        cls = type(self)
        if cls.daemon is None or cls.daemon.proc is None:
            cls.daemon = Daemon(*cls.FLAGS).start()
            cls.prepare_daemon()

    def tearDown(self):
        cls = type(self)
        d = cls.daemon
        if d is None or d.proc is None:
            return
        if d.proc.poll() is None:
            # A crash can lag the test's last request: probe, and give a dying daemon time.
            if d.probe():
                return
            try:
                d.proc.wait(scaled(5))
            except subprocess.TimeoutExpired:
                return  # alive but unresponsive: the next test will say so
        problems = d.finish(timeout=scaled(5))
        cls.daemon = None
        try:
            cls.daemon = Daemon(*cls.FLAGS).start()
            cls.prepare_daemon()
        finally:
            self.fail("the daemon died during this test (exit %r); leftovers:\n  - %s\n"
                      "--- daemon log tail ---\n%s"
                      % (d.exit_code, "\n  - ".join(problems[:12]), d.log_text(last=15)))

    # helpers

    def assertJsonError(self, r, status, contains=None):
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.header("Content-Type"), "application/json", r)
        data = r.json()
        self.assertIsInstance(data, dict, r)
        self.assertIn("error", data, r)
        self.assertIsInstance(data["error"], str, r)
        if contains is not None:
            for needle in ([contains] if isinstance(contains, str) else contains):
                self.assertIn(needle, data["error"], r)
        return data["error"]
