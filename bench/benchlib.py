"""Shared pieces of the benchmark scripts: a node and an nginx under test, wrk, statistics.

Every benchmark measures its reference (nginx, a raw pipe) in the same run, because figures
from different runs on a shared machine are not comparable; ratios are what to read.
Nothing here asserts on time: the scripts print what they measured.
"""

import argparse
import atexit
import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
POST_LUA = os.path.join(BENCH_DIR, "post.lua")


def rel(path):
    """Path as printed in commands: relative to the checkout when inside it."""
    path = os.path.abspath(path)
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


def common_args(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--build", default=os.path.join(ROOT, "build"),
                   help="build directory with src/faasvisord and bench/ helpers (default: build)")
    p.add_argument("--json", metavar="PATH", help="also write the summary rows to PATH (for run-all)")
    return p


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------------------- statistics

def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of an unsorted list; None when empty."""
    if not values:
        return None
    s = sorted(values)
    rank = max(1, min(len(s), int(-(-p * len(s) // 100))))
    return s[rank - 1]


def fmt_ms(us):
    return "n/a" if us is None else f"{us / 1000:.2f} ms"


def fmt_us(us):
    return "n/a" if us is None else f"{us:.0f} us" if us >= 100 else f"{us:.1f} us"


def ratio(a, b):
    return None if not a or not b else a / b


def fmt_ratio(r):
    return "n/a" if r is None else f"{r:.2f}x"


# ---------------------------------------------------------------------------- processes

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_port(pid):
    """The TCP port process pid listens on, from /proc (the node prints it only at info level)."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A = LISTEN
                    return int(cols[1].rsplit(":", 1)[1], 16)
    return None


def children(pid):
    """Pids of pid's direct children (all its threads' children)."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def status_field(pid, field, index=0):
    """Word index of a field of /proc/PID/status (e.g. 'Uid'), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return line.split()[1 + index]
    except (OSError, IndexError):
        pass
    return None


def status_kib(pid, field):
    """A kB field of /proc/PID/status (VmRSS, VmHWM, ...), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def smaps_rollup_kib(pid):
    """{'Rss': kB, 'Pss': kB, ...} from /proc/PID/smaps_rollup, or {} if it is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        pass
    return out


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_times():
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + vals[4]  # idle + iowait
    return sum(vals), idle


def background_busy_percent(window_s=0.5):
    """How busy the machine's CPUs are with no benchmark running (100 = every CPU busy).
    The machine may be shared: figures taken while this is high are slower and noisier."""
    total0, idle0 = _cpu_times()
    time.sleep(window_s)
    total1, idle1 = _cpu_times()
    dt = total1 - total0
    return 0.0 if dt <= 0 else 100.0 * (1 - (idle1 - idle0) / dt)


def log_background_load():
    """Logs how loaded the machine is before a benchmark starts; returns the busy percent."""
    busy = background_busy_percent()
    note = f"background CPU use before the run: {busy:.0f}% of {os.cpu_count()} CPUs"
    if busy > 10:
        note += " (WARNING: something else is running; figures will be slower and noisier)"
    log(note)
    return busy


def machine_line():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    return (f"{os.cpu_count()} CPUs ({model}), kernel {os.uname().release}, "
            f"faasvisor {commit}, {time.strftime('%Y-%m-%d')}")


# ---------------------------------------------------------------------------- the servers

_live = []  # servers started and not yet stopped: stopped at exit, whatever the exit


def _stop_live():
    for server in list(_live):
        server.stop()


atexit.register(_stop_live)


def _die_with_parent():
    """preexec_fn: the server gets SIGTERM if this script dies without stopping it."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


# ---------------------------------------------------------------------------- the node

ECHO_SPEC = {"service": "echo", "envProcess": "./echo",
             "labels": {"com.openfaas.scale.max": "1000"}, "limits": {"memory": "64Mi"}}


class Node:
    """A faasvisord of our own on a free loopback port, stopped by stop() (or on exit)."""

    def __init__(self, build, stem_pool=None, extra_args=()):
        self.build = os.path.abspath(build)
        self.binary = os.path.join(self.build, "src", "faasvisord")
        if not os.access(self.binary, os.X_OK):
            sys.exit(f"bench: {self.binary} is missing: build first (ninja -C {rel(self.build)})")
        # The images benchmarks deploy live in the checkout, the build directory and temp dirs.
        self.args = [self.binary, "--listen", "127.0.0.1:0", "--log-level", "warn",
                     "--image-root", ROOT, "--image-root", self.build,
                     "--image-root", tempfile.gettempdir()]
        if stem_pool is not None:
            self.args += ["--stem-pool", str(stem_pool)]
        self.args += list(extra_args)
        # --accel=auto boots a probe guest at start (a busy CPU for up to 2 s where /dev/kvm is
        # broken): benchmarks that do not run VMs must not compete with it.
        if not any(a == "--accel" or a.startswith("--accel=") for a in self.args):
            self.args.append("--accel=tcg")
        # Benchmarks keep no state between runs and run beside other nodes: no shared
        # /var/lib/faasvisor/state (bench/store passes its own --state-dir).
        if not any(a == "--state-dir" or a.startswith("--state-dir=") for a in self.args):
            self.args += ["--state-dir", "none"]
        self.stem_pool = 16 if stem_pool is None else stem_pool
        self.log = tempfile.NamedTemporaryFile(prefix="faasvisord-bench-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        _live.append(self)
        self.pid = self.proc.pid
        self.port = self._wait_port()
        self.conn = None

    @property
    def command(self):
        return " ".join([rel(self.args[0])] + self.args[1:])

    def _wait_port(self, timeout_s=10):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"bench: faasvisord exited ({self.proc.returncode}): {self.log_text()}")
            port = listening_port(self.pid)
            if port:
                return port
            time.sleep(0.01)
        self.stop()
        sys.exit("bench: faasvisord did not start listening")

    def log_text(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def request(self, method, path, body=None):
        """(status, parsed JSON or text) over one kept-alive control connection."""
        data = None if body is None else (body if isinstance(body, (bytes, str)) else json.dumps(body))
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self.conn.request(method, path, body=data)
                resp = self.conn.getresponse()
                text = resp.read().decode(errors="replace")
                break
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if self.proc.poll() is not None:
                    sys.exit(f"bench: faasvisord exited (status {self.proc.returncode}) during "
                             f"{method} {path}; its log ({self.log.name}):\n{self.log_text()[-4000:]}")
                if attempt == 1:
                    raise
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text

    def request_bytes(self, path, body, timeout_s=120):
        """(status, body bytes) of a POST on a connection of its own (large bodies)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        try:
            conn.request("POST", path, body=body)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def deploy_echo(self, max_instances=1000):
        spec = dict(ECHO_SPEC, image=os.path.join(self.build, "examples", "echo"))
        spec["labels"] = {"com.openfaas.scale.max": str(max_instances)}
        status, body = self.request("POST", "/system/functions", spec)
        if status != 202:
            self.stop()
            sys.exit(f"bench: deploy echo: HTTP {status}: {body}")

    def scale(self, name, replicas):
        status, body = self.request("POST", f"/system/scale-function/{name}",
                                    {"serviceName": name, "replicas": replicas})
        if status // 100 != 2:
            sys.exit(f"bench: scale {name} to {replicas}: HTTP {status}: {body}")

    def stats(self, name):
        status, body = self.request("GET", "/system/stats")
        return body["functions"][name]

    def reset_stats(self):
        self.request("DELETE", "/system/stats")

    def instance_pids(self, name):
        status, body = self.request("GET", f"/system/function/{name}")
        return [i["pid"] for i in body["faasvisor"]["instances"] if i.get("pid")]

    def wait_instances(self, name, done, timeout_s=60, poll_s=0.001):
        """Polls the stats until done(instances) holds; returns the instances dict (or None)."""
        deadline = time.monotonic() + timeout_s
        while True:
            inst = self.stats(name)["instances"]
            if done(inst):
                return inst
            if time.monotonic() > deadline:
                return None
            time.sleep(poll_s)

    def stems(self):
        """Pids of the pre-made sandboxes waiting in the pool. A stem stays on as its
        instance's init once used, but then it has dropped root for the function's user."""
        return [p for p in children(self.pid)
                if comm(p) == "faasvisor-stem" and status_field(p, "Uid", 0) == "0"]

    def wait_stems(self, timeout_s=5):
        """Waits until the stem pool is full again; returns how many stems there are."""
        deadline = time.monotonic() + timeout_s
        while True:
            n = len(self.stems())
            if n >= self.stem_pool or time.monotonic() > deadline:
                return n
            time.sleep(0.002)

    def stop(self):
        if self not in _live:
            return
        _live.remove(self)
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.returncode == 0:
            os.unlink(self.log.name)
        else:
            log(f"bench: faasvisord exited with status {self.proc.returncode}; log kept in {self.log.name}")


# ---------------------------------------------------------------------------- nginx

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  keepalive_requests 100000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 200 "ok"; }}
  }}
}}
"""


class Nginx:
    """nginx with one worker (the node is one event loop too) returning a static 'ok'."""

    def __init__(self):
        self.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.prefix = tempfile.mkdtemp(prefix="faasvisor-bench-nginx-")
        self.port = free_port()
        self.conf = os.path.join(self.prefix, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(NGINX_CONF.format(prefix=self.prefix, port=self.port))
        self.proc = subprocess.Popen(
            [self.nginx, "-p", self.prefix, "-e", os.path.join(self.prefix, "error.log"), "-c", self.conf],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent)
        _live.append(self)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = open(os.path.join(self.prefix, "error.log")).read()
                    self.stop()
                    sys.exit(f"bench: nginx did not start: {err}")
                time.sleep(0.01)

    def worker_pids(self):
        return children(self.proc.pid)

    def stop(self):
        if self not in _live:
            return
        _live.remove(self)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: master and worker exit
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.prefix, ignore_errors=True)


# ---------------------------------------------------------------------------- wrk

_UNITS_US = {"us": 1.0, "ms": 1000.0, "s": 1e6, "m": 60e6}


def _to_us(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * _UNITS_US[m.group(2)] if m else None


def wrk_command(url, connections, duration_s, latency=False):
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s"]
    if latency:
        cmd.append("--latency")
    return cmd + ["-s", POST_LUA, url]


def printable(cmd, server):
    """The command as shown in the summary: the port changes every run, so the URL names the
    server instead (server is "node" or "nginx")."""
    words = [rel(c) if c == POST_LUA else c for c in cmd]
    return re.sub(r"http://127\.0\.0\.1:\d+", f"http://<{server}>", " ".join(words))


def run_wrk(cmd, env=None):
    """Runs wrk; returns {'rps', 'requests', 'errors', 'p50_us', 'p99_us', 'text'}. env: for
    a wrk script that reads its parameters from the environment."""
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is not installed (tools/setup installs it)")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    text = out.stdout + out.stderr
    res = {"text": text, "rps": None, "requests": None, "errors": 0, "p50_us": None, "p99_us": None}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", text)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        res["errors"] += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        res["errors"] += sum(int(x) for x in m.groups())
    for pct, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", text, re.M)
        if m:
            res[key] = _to_us(m.group(1))
    return res


# ---------------------------------------------------------------------------- summary rows

def row(measure, value, reference="", ratio_text="", target="", command=""):
    return {"measure": measure, "value": value, "reference": reference, "ratio": ratio_text,
            "target": target, "command": command}


def write_rows(path, rows, busy_percent):
    """Hands the summary rows to run-all, with the background load they were measured under."""
    if path:
        with open(path, "w") as f:
            json.dump({"busy_percent": busy_percent, "rows": rows}, f, indent=1)


def markdown_table(rows):
    lines = ["| Measure | faasvisor | Reference | Ratio | Target | Command |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        cmd = f"`{r['command']}`" if r["command"] else ""
        lines.append(f"| {r['measure']} | {r['value']} | {r['reference']} | {r['ratio']} | "
                     f"{r['target']} | {cmd} |")
    return "\n".join(lines)
