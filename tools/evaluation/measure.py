"""Plans and runs the comparison: for each backend, cold runs (every instance removed first,
as the study restarted its platform between cold runs) and warm runs (instances pre-booted
with scale-function, as the study's /pre-boot/N) at each number of simultaneous invocations,
repeated until each point has enough samples for a mean and a 95th percentile."""

import math
import os
import sys
import time

from .node import NodeError
from .store import mean

FULL_POINTS = [1, 2, 3, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 56, 60]
QUICK_POINTS = [1, 2, 4, 8]
BODY = b"faasvisor evaluation"
PREFIX = "eval-"
INVOKE_TIMEOUT_S = 180
BOOT_TIMEOUT = "120s"
RESET_TIMEOUT_S = 180
SETTLE_S = 0.2  # after a reset: let the node refill what it prepares ahead (sandboxes)


class Settings:
    def __init__(self, mode, points, target_samples, min_repeats, budget_s, memory_points,
                 backends=None, functions=None):
        self.mode = mode
        self.points = sorted(set(points))
        self.target_samples = target_samples
        self.min_repeats = min_repeats
        self.budget_s = budget_s
        self.memory_points = memory_points  # how many warm points also measure memory
        self.backends = backends            # None: every available backend
        self.functions = functions or {}    # backend -> template function name

    def repeats(self, n):
        return max(self.min_repeats, math.ceil(self.target_samples / n))

    def as_meta(self):
        return {"mode": self.mode, "points": self.points, "target_samples": self.target_samples,
                "min_repeats": self.min_repeats}


def parse_memory(text):
    """Bytes of a Kubernetes-style quantity ("64Mi", "128M", "1Gi", "1048576")."""
    text = str(text).strip()
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
             "K": 10**3, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return int(float(text[:-len(suffix)]) * units[suffix])
    return int(float(text))


def backend_of(fn):
    return (fn.get("faasvisor", {}).get("backend") or
            fn.get("annotations", {}).get("faasvisor.backend") or "process")


def pick_template(functions, backend, wanted=None):
    """The deployed function whose definition the evaluation copies for a backend: the one
    named with --function, else the echo example (echo, echo-BACKEND), else any."""
    mine = [f for f in functions if backend_of(f) == backend and not f["name"].startswith(PREFIX)]
    if wanted:
        for f in mine:
            if f["name"] == wanted:
                return f
        return None
    for name in ("echo", "echo-" + backend):
        for f in mine:
            if f["name"] == name:
                return f
    echo = [f for f in mine if "echo" in f["name"]]
    return (echo or mine or [None])[0]


def eval_spec(template, backend, max_instances):
    """A copy of the template under the evaluation's own name and settings."""
    annotations = dict(template.get("annotations") or {})
    annotations.update({"faasvisor.backend": backend, "faasvisor.keepalive": "fixed:1h",
                        "faasvisor.timeout": "%ds" % INVOKE_TIMEOUT_S,
                        "faasvisor.queue": str(max(64, 2 * max_instances))})
    boot = annotations.get("faasvisor.boot_timeout")
    if boot is None or parse_duration_s(boot) < parse_duration_s(BOOT_TIMEOUT):
        annotations["faasvisor.boot_timeout"] = BOOT_TIMEOUT
    labels = dict(template.get("labels") or {})
    labels.update({"com.openfaas.scale.max": str(max_instances), "com.openfaas.scale.min": "0"})
    spec = {"service": PREFIX + backend, "image": template["image"],
            "envProcess": template["envProcess"], "envVars": template.get("envVars") or {},
            "labels": labels, "annotations": annotations,
            "limits": dict(template.get("limits") or {})}
    return spec


def parse_duration_s(text):
    text = str(text).strip()
    for suffix, scale in (("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix):
            try:
                return float(text[:-len(suffix)]) * scale
            except ValueError:
                return 0.0
    try:
        return float(text)
    except ValueError:
        return 0.0


def artefact(template, backend):
    """(bytes, what was measured): what a node must store for this function and nothing it
    shares with other functions. An image file (a unikernel, a VM image) counts whole; an
    image directory counts its regular files (a container's rootfs), except for the process
    backend, whose directory may be a build or source tree: there, the executable the
    command names, when it lies inside the directory."""
    image = template["image"]
    words = (template.get("envProcess") or "").split()
    if os.path.isfile(image):
        return os.path.getsize(image), image
    if not os.path.isdir(image):
        return None, image
    if backend == "process" and words:
        exe = os.path.normpath(os.path.join(image, words[0]))
        if exe.startswith(os.path.normpath(image) + os.sep) and os.path.isfile(exe):
            return os.path.getsize(exe), exe
    total = 0
    for dirpath, _dirs, files in os.walk(image):
        for f in files:
            path = os.path.join(dirpath, f)
            if os.path.isfile(path) and not os.path.islink(path):
                total += os.path.getsize(path)
    return total, image + "/"


def process_children():
    """{pid: [child pids]} from one scan of /proc."""
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    data = f.read()
                ppid = int(data[data.rfind(")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
    return children


def tree_of(pids, children):
    todo, seen = [p for p in pids if p and p > 0], []
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo.extend(children.get(p, []))
    return seen


def tree_memory(pid, children):
    """(RSS, PSS) in bytes, summed over the process and everything below it."""
    rss = pss = 0
    for p in tree_of([pid], children):
        try:
            with open("/proc/%d/smaps_rollup" % p) as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
    return rss, pss


def accelerators_below(pids):
    """The hypervisor accelerator of any QEMU or Firecracker process at or below the given
    pids (read from their command lines): {"tcg"}, {"kvm"} or empty."""
    found = set()
    for p in tree_of(pids, process_children()):
        try:
            with open("/proc/%d/cmdline" % p, "rb") as f:
                argv = f.read().decode("utf-8", "replace").split("\0")
        except OSError:
            continue
        exe = os.path.basename(argv[0]) if argv else ""
        if "firecracker" in exe or "cloud-hypervisor" in exe:
            found.add("kvm")
        elif "qemu" in exe:
            found.add(qemu_accelerator(argv))
    return found


def qemu_accelerator(argv):
    for i, a in enumerate(argv):
        if a == "-enable-kvm":
            return "kvm"
        if a == "-accel" and i + 1 < len(argv):
            return argv[i + 1].split(",")[0].split(":")[0]
        if a.startswith("-accel="):
            return a.split("=", 1)[1].split(",")[0]
        if a in ("-machine", "-M") and i + 1 < len(argv) and "accel=" in argv[i + 1]:
            return argv[i + 1].split("accel=", 1)[1].split(",")[0].split(":")[0]
    return "tcg"  # QEMU's default on x86 without -enable-kvm


class Progress:
    """One line per run on stderr: what, how far, time left (from the pace so far)."""

    def __init__(self, total_runs, budget_s, stream=sys.stderr):
        self.total = total_runs
        self.done = 0
        self.started = time.monotonic()
        self.budget_s = budget_s
        self.stream = stream
        self.rates = {}  # (backend, phase) -> [seconds, weight]

    def weight(self, n):
        return n + 1.0

    def record(self, backend, phase, n, seconds):
        r = self.rates.setdefault((backend, phase), [0.0, 0.0])
        r[0] += seconds
        r[1] += self.weight(n)

    def predict(self, backend, phase, n):
        r = self.rates.get((backend, phase))
        if r and r[1] > 0:
            return r[0] / r[1] * self.weight(n)
        # A backend not started yet: the slowest pace seen so far, or a guess if slower
        # (the estimate shrinks as it is measured; the time budget bounds it anyway).
        others = [v[0] / v[1] for (b, p), v in self.rates.items() if p == phase and v[1] > 0]
        per = max(others + [0.6 if phase == "cold" else 0.1])
        return per * self.weight(n)

    def line(self, text, remaining_s):
        elapsed = time.monotonic() - self.started
        left = min(remaining_s, max(0.0, self.budget_s - elapsed))
        pct = 100.0 * self.done / self.total if self.total else 100.0
        self.stream.write("[%4d/%d %5.1f%%  elapsed %s  left ~%s] %s\n"
                          % (self.done, self.total, pct, clock(elapsed), clock(left), text))
        self.stream.flush()


def clock(seconds):
    seconds = int(round(seconds))
    return "%dm%02ds" % (seconds // 60, seconds % 60)


class Evaluation:
    def __init__(self, node, store, settings, log=sys.stderr):
        self.node = node
        self.store = store
        self.s = settings
        self.log = log
        self.info = None
        self.plans = []          # [{backend, template, spec, points, cap, runs: [...]}]
        self.notes = {}          # backend -> [text]
        self.accelerator = {}    # backend -> "tcg" / "kvm"
        self.unavailable = {}    # backend -> why
        self.sample_ms = 1000
        self.skipped = set()     # (backend, phase, n, repeat) left out this session

    def say(self, text):
        self.log.write("evaluate: %s\n" % text)
        self.log.flush()

    def note(self, backend, text):
        self.notes.setdefault(backend, []).append(text)
        self.say("%s: %s" % (backend, text))

    # -- planning --

    def plan(self):
        self.info = self.node.info()
        fv = self.info["faasvisor"]
        self.sample_ms = int(fv.get("memory_sample_ms") or 1000)
        listed = {b["name"]: b for b in fv["backends"]}
        wanted = self.s.backends or list(listed)
        functions = self.node.functions()
        for b in wanted:
            if b not in listed:
                raise NodeError("backend %r: the node has no such backend (it has %s)"
                                % (b, ", ".join(listed)))
            if not listed[b].get("available"):
                self.unavailable[b] = listed[b].get("why_not", "not available")
                continue
            if listed[b].get("accelerator"):
                self.accelerator[b] = listed[b]["accelerator"].lower()
            template = pick_template(functions, b, self.s.functions.get(b))
            if template is None:
                self.unavailable[b] = ("no deployed function to copy (deploy one with "
                                       "annotation faasvisor.backend=%s, e.g. tools/deploy-examples)" % b)
                continue
            self.plans.append(self.plan_backend(b, template, fv))
        for b, why in self.unavailable.items():
            self.say("%s: not measured: %s" % (b, why))
        if not self.plans:
            raise NodeError("no backend to measure")
        return self.plans

    def plan_backend(self, backend, template, fv):
        limit = parse_memory((template.get("limits") or {}).get("memory") or "128Mi")
        budget = int(fv.get("memory_budget_bytes") or 0)
        reserved = int(fv.get("memory_reserved_bytes") or 0)
        cap = max(self.s.points)
        why = ""
        if budget and limit:
            by_budget = (budget - reserved) // limit
            if by_budget < cap:
                cap, why = by_budget, "the node's memory budget (%d MiB free of %d MiB) holds %d instances of %d MiB" % (
                    (budget - reserved) >> 20, budget >> 20, by_budget, limit >> 20)
        avail = mem_available()
        if avail and limit and avail // limit < cap:
            cap, why = avail // limit, "the host's available memory (%d MiB) holds %d instances of %d MiB" % (
                avail >> 20, avail // limit, limit >> 20)
        cap = max(1, int(cap))
        points = [p for p in self.s.points if p <= cap]
        if cap < max(self.s.points) and cap not in points:
            points.append(cap)
        if why:
            self.note(backend, "simultaneous invocations capped at %d: %s" % (cap, why))
        memory_at = pick_spread(points, self.s.memory_points)
        runs = [("static", 0, 0)]
        for r in range(max(self.s.repeats(n) for n in points)):
            for n in points:
                if r < self.s.repeats(n):
                    runs.append(("cold", n, r))
                    runs.append(("warm", n, r))
        return {"backend": backend, "template": template, "points": points, "cap": cap,
                "memory_at": memory_at, "spec": eval_spec(template, backend, max(points)),
                "runs": runs, "limit": limit}

    # -- running --

    def run(self):
        total = sum(len(p["runs"]) for p in self.plans)
        self.progress = Progress(total, self.s.budget_s)
        for p in self.plans:
            for phase, n, r in p["runs"]:
                if self.store.done(p["backend"], phase, n, r):
                    self.progress.done += 1
        if self.progress.done:
            self.say("resuming: %d of %d runs already in %s" % (self.progress.done, total, self.store.dir))
        deadline = self.progress.started + self.s.budget_s
        for i, p in enumerate(self.plans):
            todo = [x for x in p["runs"] if not self.store.done(p["backend"], *x)]
            if not todo:
                continue
            share = max(0.0, deadline - time.monotonic()) / (len(self.plans) - i)
            self.run_backend(p, todo, time.monotonic() + share)

    def remaining_s(self):
        left = 0.0
        for p in self.plans:
            for phase, n, r in p["runs"]:
                if not self.store.done(p["backend"], phase, n, r) and (p["backend"], phase, n, r) not in self.skipped:
                    left += self.progress.predict(p["backend"], phase, n)
        return left

    def run_backend(self, p, todo, backend_deadline):
        b, name = p["backend"], p["spec"]["service"]
        if self.node.function(name) is not None:
            self.reset(name)
            self.node.delete(name)
        self.node.deploy(p["spec"])
        try:
            over_time, over_memory = 0, 0
            for phase, n, r in todo:
                # A run that would not fit in the backend's share of the time, or in the host's
                # memory, is skipped; a smaller one later in the plan may still fit.
                if phase != "static" and time.monotonic() + self.progress.predict(b, phase, n) > backend_deadline:
                    over_time += 1
                elif phase != "static" and not self.fits_in_memory(b, name, n):
                    over_memory += 1
                else:
                    self.measure_run(p, phase, n, r)
                    continue
                self.skipped.add((b, phase, n, r))
                self.progress.done += 1
            if over_time:
                self.note(b, "time budget reached: %d runs not made (the points measured have "
                             "fewer repeats, the largest maybe none)" % over_time)
            if over_memory:
                self.note(b, "%d runs not made: their instances' RSS would not fit in 80%% of the "
                             "host's available memory" % over_memory)
        finally:
            self.remove(name)

    def fits_in_memory(self, backend, name, n):
        """Whether n instances fit the host, by the RSS measured so far (a VM's exceeds its
        memory limit: the VMM and, under TCG, the translation cache come on top)."""
        per = max((mean(self.store.values(backend, "rss_bytes", "warm", k))
                   for k in self.store.concurrencies(backend, "rss_bytes", "warm")), default=0)
        if not per:
            return True
        live = len(self.node.instances(name))
        return n * per <= 0.8 * (mem_available() + live * per)

    def measure_run(self, p, phase, n, r):
        b = p["backend"]
        what = "%s %s" % (b, "artefact size" if phase == "static" else
                          "%s  n=%-2d  repeat %d/%d" % (phase, n, r + 1, self.s.repeats(n)))
        self.progress.line(what, self.remaining_s())
        t0, wall = time.monotonic(), time.time()
        try:
            rows, errors, note = self.one_run(p, phase, n, r)
        except NodeError as e:
            # One run that goes wrong (instances that do not boot or stop in time) is left
            # out and the evaluation goes on; a node that no longer answers ends it.
            self.node.info()
            self.note(b, "%s n=%d repeat %d not measured: %s" % (phase, n, r + 1, e))
            self.skipped.add((b, phase, n, r))
            self.progress.done += 1
            return
        seconds = time.monotonic() - t0
        self.store.record_run(b, phase, n, r, rows, errors, seconds, wall, note)
        self.progress.record(b, phase, n, seconds)
        self.progress.done += 1
        if errors:
            self.note(b, "%s n=%d repeat %d: %d of %d invocations failed%s"
                      % (phase, n, r + 1, errors, n, (": " + shorten(note)) if note else ""))

    def one_run(self, p, phase, n, r):
        if phase == "static":
            size, what = artefact(p["template"], p["backend"])
            if size is None:
                return [], 0, "image %s not readable here" % what
            return [{"metric": "artefact_bytes", "value": size, "start": "", "instance": "",
                     "status": ""}], 0, what
        name = p["spec"]["service"]
        if phase == "cold":
            self.reset(name)
            time.sleep(SETTLE_S)
        else:
            self.ensure_warm(name, n)
        results = self.node.fire(name, n, BODY, INVOKE_TIMEOUT_S)
        rows, errors, first_error = [], 0, ""
        for res in results:
            status = res["status"]
            if status != 200:
                errors += 1
                first_error = first_error or res.get("error") or res.get("body", b"")[:200].decode("utf-8", "replace")
            common = {"start": res.get("start", ""), "instance": res.get("instance", ""),
                      "status": status}
            if res.get("duration_s") is not None:
                rows.append(dict(common, metric="exec_ms", value="%.3f" % (float(res["duration_s"]) * 1e3)))
            if "client_ms" in res:
                rows.append(dict(common, metric="client_ms", value="%.3f" % res["client_ms"]))
        insts = self.node.instances(name)
        if phase == "cold":
            for inst in insts:
                if inst.get("initMs") is not None:
                    rows.append({"metric": "init_ms", "value": "%.3f" % inst["initMs"], "start": "",
                                 "instance": inst["id"], "status": ""})
        if phase == "warm" and r == 0 and n in p["memory_at"]:
            rows += self.memory_rows(name)
        if phase == "warm" and p["backend"] not in self.accelerator:
            acc = accelerators_below([i.get("pid", 0) for i in insts])
            if acc:
                self.accelerator[p["backend"]] = "/".join(sorted(acc))
        return rows, errors, first_error

    def memory_rows(self, name):
        """Each instance's memory as the node measured it, after a full sampling period
        that began once every instance had served an invocation."""
        time.sleep(2 * self.sample_ms / 1000.0 + 0.1)
        insts = self.node.instances(name)
        if any(not i.get("memoryBytes") for i in insts):
            time.sleep(self.sample_ms / 1000.0 + 0.1)
            insts = self.node.instances(name)
        rows = [{"metric": "memory_bytes", "value": i["memoryBytes"], "start": "",
                 "instance": i["id"], "status": ""} for i in insts if i.get("memoryBytes")]
        # The study's measure (RSS) and PSS, read from /proc for every process at or below
        # the instance's process (a VMM; a runtime and its sandbox; a sandbox and its function).
        children = process_children()
        for i in insts:
            rss, pss = tree_memory(i.get("pid", 0), children)
            if rss:
                rows.append({"metric": "rss_bytes", "value": rss, "start": "", "instance": i["id"], "status": ""})
                rows.append({"metric": "pss_bytes", "value": pss, "start": "", "instance": i["id"], "status": ""})
        return rows

    def reset(self, name):
        """No instance left: scale to 0 (stops idle ones), again until none remains."""
        deadline = time.monotonic() + RESET_TIMEOUT_S
        while True:
            self.node.scale(name, 0)
            try:
                self.node.wait_instances(name, lambda insts: not insts, 1.0, "removing every instance")
                return
            except NodeError:
                if time.monotonic() > deadline:
                    raise

    def ensure_warm(self, name, n):
        self.node.scale(name, n)
        self.node.wait_instances(
            name, lambda insts: sum(1 for i in insts if i["state"] == "warm") >= n,
            RESET_TIMEOUT_S, "pre-booting %d instances" % n)

    def remove(self, name):
        try:
            if self.node.function(name) is not None:
                self.node.scale(name, 0)
                try:
                    self.node.wait_instances(name, lambda insts: not insts, 30, "removing every instance")
                except NodeError:
                    pass
                self.node.delete(name)
        except NodeError as e:
            self.say("cleanup of %s: %s" % (name, e))


def shorten(text, limit=240):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def pick_spread(points, k):
    """Up to k of the points, spread from the smallest to the largest."""
    if k <= 0 or not points:
        return []
    if k >= len(points):
        return list(points)
    if k == 1:
        return [points[0]]
    return sorted({points[round(i * (len(points) - 1) / (k - 1))] for i in range(k)})


def mem_available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
