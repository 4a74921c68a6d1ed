"""The markdown report: host, accelerator, what each figure shows, tables, and the study's
findings checked against the measured data (recomputed on every run, so a rerun with more
backends updates the verdicts)."""

import math
import os
import platform
import socket
import subprocess
import time

from . import plots
from .store import mean, percentile

# The study's technologies as faasvisor backends.
STUDY = {"unikernel": "unikernel (Unikraft on QEMU)", "microvm": "microVM (Firecracker)",
         "gvisor": "gVisor container"}


def host_facts(root):
    facts = {"hostname": socket.gethostname(), "kernel": platform.release(),
             "cores": os.cpu_count(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    facts["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            facts["memory_mib"] = int(f.readline().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    facts["os"] = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    facts["kvm_device"] = os.path.exists("/dev/kvm")
    facts["root"] = root
    facts["loadavg"] = os.getloadavg()[0]
    facts["commit"] = _run(["git", "-C", root, "rev-parse", "--short", "HEAD"])
    for tool, argv in (("qemu", ["qemu-system-x86_64", "--version"]), ("crun", ["crun", "--version"]),
                       ("runsc", ["runsc", "--version"])):
        out = _run(argv)
        if out:
            facts[tool] = out.splitlines()[0]
    return facts


def _run(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def fmt(v, digits=1):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if abs(v) >= 100:
        return "%.0f" % v
    return ("%%.%df" % digits) % v


class Data:
    """Means and percentiles by backend, metric and concurrency."""

    def __init__(self, store):
        self.store = store

    def at(self, b, metric, phase, n, start=None, stat="mean"):
        xs = self.store.values(b, metric, phase=phase, concurrency=n, start=start)
        if not xs:
            return None
        return mean(xs) if stat == "mean" else percentile(xs, 95)

    def points(self, b, metric, phase):
        return self.store.concurrencies(b, metric, phase)

    def init(self, b, n, stat="mean"):
        return self.at(b, "init_ms", "cold", n, None, stat)

    def cold(self, b, n, stat="mean"):
        return self.at(b, "exec_ms", "cold", n, "cold", stat)

    def warm(self, b, n, stat="mean"):
        return self.at(b, "exec_ms", "warm", n, None, stat)

    def gap(self, b, n):
        c, w = self.cold(b, n), self.warm(b, n)
        return None if c is None or w is None else c - w

    def memory(self, b):
        """Mean RSS of an instance (the study's measure) with the fewest instances running."""
        ns = self.points(b, "rss_bytes", "warm")
        return (self.at(b, "rss_bytes", "warm", ns[0]), ns[0]) if ns else (None, None)

    def artefact(self, b):
        xs = self.store.values(b, "artefact_bytes", "static")
        return xs[-1] if xs else None


def compare_points(data, f, backends, better, condition=lambda n: True):
    """For each point every backend measured: does `better` hold of f(b, n) values?
    Returns (holds, total, [points where it fails])."""
    common = None
    for b in backends:
        ns = set(data.points(b, "exec_ms", "cold"))
        common = ns if common is None else common & ns
    holds, total, fails = 0, 0, []
    for n in sorted(common or []):
        if not condition(n):
            continue
        vals = {b: f(b, n) for b in backends}
        if any(v is None for v in vals.values()):
            continue
        total += 1
        if better(vals):
            holds += 1
        else:
            fails.append(n)
    return holds, total, fails


def verdict(holds, total, fails):
    if total == 0:
        return "no common points"
    if holds == total:
        return "**agrees** (all %d points)" % total
    if holds == 0:
        return "**disagrees** (all %d points)" % total
    return "partly (%d of %d points; not at n = %s)" % (holds, total, ", ".join(map(str, fails)))


def study_claims(data, measured):
    """[(the study's finding, what was measured here, verdict)]."""
    have = set(measured)
    rows = []

    def need(*bs):
        missing = [b for b in bs if b not in have]
        return ("not measured here: needs the %s backend%s" % (" and ".join(missing), "s" if len(missing) > 1 else "")
                if missing else None)

    # 5.2.1 memory
    miss = need("gvisor", "microvm", "unikernel")
    if miss:
        rows.append(("5.1: gVisor containers need much more memory per instance than microVMs and unikernels",
                     "", miss))
    else:
        m = {b: data.memory(b)[0] for b in ("gvisor", "microvm", "unikernel")}
        ok = m["gvisor"] > m["microvm"] and m["gvisor"] > m["unikernel"]
        rows.append(("5.1: gVisor containers need much more memory per instance than microVMs and unikernels",
                     ", ".join("%s %.1f MiB" % (b, v / 2**20) for b, v in m.items()),
                     "**agrees**" if ok else "**disagrees**"))
    miss = need("microvm", "unikernel")
    if miss:
        rows.append(("5.1: microVMs and unikernels have similar memory footprints", "", miss))
    else:
        a, b = data.memory("microvm")[0], data.memory("unikernel")[0]
        ratio = max(a, b) / min(a, b)
        rows.append(("5.1: microVMs and unikernels have similar memory footprints",
                     "microvm %.1f MiB, unikernel %.1f MiB (%.1fx)" % (a / 2**20, b / 2**20, ratio),
                     "**agrees**" if ratio <= 1.5 else "**disagrees**"))
    # 5.2 times
    trio = ("gvisor", "microvm", "unikernel")
    checks = [
        ("5.2a: beyond 3 simultaneous invocations unikernels initialise faster than gVisor containers",
         ("unikernel", "gvisor"), data.init, lambda v: v["unikernel"] < v["gvisor"], lambda n: n > 3),
        ("5.2a: microVMs initialise slowest at every scale", trio, data.init,
         lambda v: v["microvm"] > max(v["unikernel"], v["gvisor"]), lambda n: True),
        ("5.2b: unikernels execute fastest on a cold start at every scale", trio, data.cold,
         lambda v: v["unikernel"] < min(v["microvm"], v["gvisor"]), lambda n: True),
        ("5.2c: microVMs are slowest on a warm start", trio, data.warm,
         lambda v: v["microvm"] > max(v["unikernel"], v["gvisor"]), lambda n: True),
        ("5.2d: unikernels have the smallest cold-warm gap at every scale", trio, data.gap,
         lambda v: v["unikernel"] < min(v["microvm"], v["gvisor"]), lambda n: True),
    ]
    for claim, bs, f, better, cond in checks:
        miss = need(*bs)
        if miss:
            rows.append((claim, "", miss))
            continue
        h, t, fails = compare_points(data, f, bs, better, cond)
        rows.append((claim, "means compared at each point all of %s measured" % ", ".join(bs),
                     verdict(h, t, fails)))
    miss = need("unikernel")
    claim = "5.2: unikernel 95th percentiles stay close to the means (here: p95 within 1.5x of the mean, cold starts)"
    if miss:
        rows.append((claim, "", miss))
    else:
        ns = data.points("unikernel", "exec_ms", "cold")
        ratios = [(n, data.cold("unikernel", n, "p95") / data.cold("unikernel", n)) for n in ns
                  if data.cold("unikernel", n)]
        fails = [n for n, r in ratios if r > 1.5]
        rows.append((claim, "largest p95/mean %.2f" % max(r for _n, r in ratios) if ratios else "",
                     verdict(len(ratios) - len(fails), len(ratios), fails)))
    # 5.2.3 artefacts
    miss = need("microvm", "gvisor", "unikernel")
    claim = "5.3: microVM and container artefacts are the same size, unikernels about 30% larger"
    if miss:
        rows.append((claim, "", miss))
    else:
        a = {b: data.artefact(b) for b in ("microvm", "gvisor", "unikernel")}
        same = abs(a["microvm"] - a["gvisor"]) <= 0.1 * max(a["microvm"], a["gvisor"])
        larger = a["unikernel"] / max(a["microvm"], a["gvisor"]) - 1
        rows.append((claim, ", ".join("%s %.0f KiB" % (b, v / 1024) for b, v in a.items()) +
                     " (unikernel %+.0f%%)" % (100 * larger),
                     "**agrees**" if same and 0.1 <= larger <= 0.6 else "**disagrees**"))
    return rows


def accelerator_text(ev_accel, measured, facts):
    vm = [b for b in measured if b in ("microvm", "unikernel") or b in ev_accel]
    kvm = "present" if facts.get("kvm_device") else "absent"
    if not vm:
        return ("none: no virtual-machine backend was measured (process and container backends "
                "run on the host kernel); /dev/kvm is %s" % kvm)
    parts = []
    for b in vm:
        acc = ev_accel.get(b)
        parts.append("%s: %s" % (b, acc.upper() if acc else "unknown (no QEMU or Firecracker process seen)"))
    return "; ".join(parts) + " (read from the hypervisor's command line; /dev/kvm is %s)" % kvm


def render(store, meta, facts, out_dir, image_prefix="", title_level=1, logs=None):
    data = Data(store)
    measured = [b for b in meta.get("backends_order", store.backends()) if b in store.backends()]
    logs = logs or {}
    h = "#" * title_level
    lines = []
    add = lines.append
    add("%s faasvisor evaluation: the study's comparison rerun" % h)
    add("")
    add("Generated by `%s` on %s (%s run, %s of measuring)." % (
        meta.get("command", "tools/evaluate"), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(meta.get("finished", time.time()))),
        meta.get("mode", "?"), _minutes(meta.get("measure_s"))))
    add("")
    add("%s# Host" % h)
    add("")
    add("| | |")
    add("|---|---|")
    add("| host | %s, %s, %s cores, %s MiB RAM |" % (facts.get("hostname"), facts.get("cpu", "?"),
                                                     facts.get("cores"), facts.get("memory_mib", "?")))
    add("| system | %s, Linux %s |" % (facts.get("os", "?"), facts.get("kernel")))
    add("| accelerator | %s |" % accelerator_text(meta.get("accelerator", {}), measured, facts))
    add("| node | %s, faasvisor %s (commit %s) |" % (meta.get("url"), meta.get("release", "?"), facts.get("commit") or "?"))
    tools = ", ".join(facts[k] for k in ("crun", "runsc", "qemu") if facts.get(k))
    if tools:
        add("| runtimes | %s |" % tools)
    loads = sorted(float(r["load1"]) for r in store.runs.values() if r.get("load1"))
    add("| load | 1-minute load average %s before measuring, %s after; during the runs median %s, "
        "max %s (%d cores: above %d means other work shared the CPUs) |" % (
            fmt(meta.get("load_before"), 2), fmt(meta.get("load_after"), 2),
            fmt(percentile(loads, 50), 1) if loads else "–", fmt(loads[-1], 1) if loads else "–",
            facts.get("cores") or 0, facts.get("cores") or 0))
    add("| backends | measured: %s%s |" % (", ".join(measured) or "none", "".join(
        "; %s not measured: %s" % (b, why) for b, why in meta.get("unavailable", {}).items())))
    add("")
    add("%s# Method" % h)
    add("")
    add("Each backend runs a copy of its deployed echo function (`eval-BACKEND`: same image, command "
        "and memory limit; keep-alive 1 h so warm instances stay). At each number *n* of "
        "simultaneous invocations (points: %s), a **cold run** first removes every instance "
        "(scale to 0 and wait until none is left, as the study restarted its platform), then sends "
        "*n* invocations at once, each on its own connection opened beforehand; a **warm run** "
        "pre-boots *n* instances (`POST /system/scale-function`, the study's `/pre-boot/N`) and "
        "sends *n* invocations at once. Runs repeat until a point has about %s samples (at least "
        "%s runs). Execution time is the node's, from the invocation's arrival to its answer "
        "(`X-Duration-Seconds`; the client's own time is in the CSV as `client_ms`); "
        "initialisation time is each instance's launch to READY (`initMs`); memory is each "
        "instance's footprint as the node samples it (`memoryBytes`); the artefact is what a "
        "node stores for the function and nothing it shares with others." % (
            ", ".join(map(str, meta.get("points", []))), meta.get("target_samples"), meta.get("min_repeats")))
    add("")
    add("%s# Results" % h)
    add("")
    fig = lambda f: "%s%s" % (image_prefix, f)  # noqa: E731
    add("%s## Figure 5.1: memory per instance" % h)
    add("")
    add("![memory per instance](%s)" % fig(plots.MEMORY_FIGURE))
    add("")
    add("Mean memory of one instance while idle after serving an invocation. RSS (the study's "
        "measure) and PSS are summed over the instance's processes as /proc shows them: the "
        "process backend's sandbox supervisor, init and function; an OCI runtime's process and its "
        "container (for gVisor, the runsc sandbox and gofer); a VMM. PSS divides shared pages among "
        "the processes that map them, so it falls as instances are added; RSS counts them in full "
        "in every instance. The node's own measure (`memoryBytes`) is PSS for the process backend "
        "and the cgroup's memory charge for the OCI backends.")
    add("")
    add("| backend | instances | RSS MiB | PSS MiB | node MiB | instances | PSS MiB | node MiB |")
    add("|---|---|---|---|---|---|---|---|")
    for b in measured:
        ns = data.points(b, "memory_bytes", "warm") or data.points(b, "rss_bytes", "warm")
        if not ns:
            continue
        cells = []
        for n, metrics in ((ns[0], ("rss_bytes", "pss_bytes", "memory_bytes")),
                           (ns[-1], ("pss_bytes", "memory_bytes"))):
            cells.append(str(n))
            for m in metrics:
                xs = store.values(b, m, "warm", n)
                cells.append(fmt(mean(xs) / 2**20, 2) if xs else "–")
        add("| %s | %s |" % (b, " | ".join(cells)))
    add("")
    captions = {
        "fig5_2a_init.png": "Time from launching an instance to its READY frame, for the instances "
                            "started by a cold run of *n* simultaneous invocations.",
        "fig5_2b_cold.png": "Arrival to answer of the cold starts among *n* invocations sent at once "
                            "to a node with no instance (each waited for the boot of the instance "
                            "that served it).",
        "fig5_2c_warm.png": "Arrival to answer of invocations served by a pre-booted instance, *n* at "
                            "once on *n* warm instances.",
        "fig5_2d_gap.png": "Mean cold-start time minus mean warm-start time at each *n*: the cost of "
                           "a cold start as the user sees it.",
    }
    for fname, title, _metric, _phase, _start in plots.TIME_FIGURES + [(plots.GAP_FIGURE[0], plots.GAP_FIGURE[1], 0, 0, 0)]:
        letter, caption = title[1:].split(") ", 1)
        add("%s## Figure 5.2%s: %s" % (h, letter, caption.lower()))
        add("")
        add("![%s](%s)" % (title, fig(fname)))
        add("")
        add(captions[fname] + " Solid lines: mean; dashed: 95th percentile." * (fname != "fig5_2d_gap.png") +
            (" The y axis is logarithmic." if logs.get(fname) else ""))
        add("")
    add("Means and 95th percentiles (ms) at the smallest and largest *n* measured:")
    add("")
    add("| backend | n | init mean | init p95 | cold mean | cold p95 | warm mean | warm p95 | cold - warm |")
    add("|---|---|---|---|---|---|---|---|---|")
    for b in measured:
        ns = data.points(b, "exec_ms", "cold")
        for n in sorted({ns[0], ns[-1]}) if ns else []:
            add("| %s | %d | %s | %s | %s | %s | %s | %s | %s |" % (
                b, n, fmt(data.init(b, n)), fmt(data.init(b, n, "p95")), fmt(data.cold(b, n)),
                fmt(data.cold(b, n, "p95")), fmt(data.warm(b, n)), fmt(data.warm(b, n, "p95")),
                fmt(data.gap(b, n))))
    add("")
    add("%s## Figure 5.3: artefact size" % h)
    add("")
    add("![artefact size](%s)" % fig(plots.ARTEFACT_FIGURE))
    add("")
    add("What a node stores for the function: an image file whole (unikernel, VM image), a "
        "container's root filesystem, or a process function's executable.")
    add("")
    add("| backend | bytes | measured |")
    add("|---|---|---|")
    for b in measured:
        v = data.artefact(b)
        if v is not None:
            where = meta.get("artefact_paths", {}).get(b, "")
            if facts.get("root") and where.startswith(facts["root"] + os.sep):
                where = os.path.relpath(where, facts["root"]) + ("/" if where.endswith("/") else "")
            add("| %s | %d | `%s` |" % (b, v, where))
    add("")
    add("%s# The study's findings, checked against these measurements" % h)
    add("")
    add("The study's technologies map to backends as: %s. Other backends measured (process, crun) "
        "are references the study did not have." % ", ".join("%s = `%s`" % (v, k) for k, v in STUDY.items()))
    add("")
    add("| the study found | measured here | verdict |")
    add("|---|---|---|")
    for claim, here, v in study_claims(data, measured):
        add("| %s | %s | %s |" % (claim, here, v))
    add("")
    notes = meta.get("notes", {})
    errors = sum(int(r.get("errors") or 0) for r in store.runs.values())
    add("%s# Notes" % h)
    add("")
    add("- %d runs, %d raw samples; %d invocations failed." % (len(store.runs), len(store.samples), errors))
    mixed = _mixed_starts(store, measured)
    if mixed:
        add("- " + mixed)
    for b, texts in notes.items():
        for t in texts:
            add("- %s: %s" % (b, t))
    add("- Raw samples: `samples.csv` (one row per invocation, instance or artefact); runs: "
        "`runs.csv`; summaries: `summary.csv`.")
    add("")
    return "\n".join(lines)


def _mixed_starts(store, measured):
    """Invocations of a cold run that the node served with an instance that had just answered
    another invocation of the same run: not cold starts, so not in figure 5.2b."""
    parts = []
    for b in measured:
        k = len(store.values(b, "exec_ms", phase="cold", start="warm"))
        total = len(store.values(b, "exec_ms", phase="cold"))
        if k:
            parts.append("%s %d of %d" % (b, k, total))
    if not parts:
        return ""
    return ("Figure 5.2b counts the invocations the node served as cold starts (`X-Faasvisor-Start: "
            "cold`: each waited for the boot of the instance that served it, as every request did on "
            "the study's platform). The node gives a waiting invocation to whichever instance is "
            "ready first, so in a cold run some were answered by an instance that had just served "
            "another one (`start=warm`, `phase=cold` in samples.csv): " + ", ".join(parts) + ".")


def _minutes(seconds):
    if seconds is None:
        return "?"
    return "%.1f min" % (seconds / 60.0)


def write_summary_csv(store, path):
    import csv
    rows = []
    for b in store.backends():
        for metric, phase, start in (("init_ms", "cold", None), ("exec_ms", "cold", "cold"),
                                     ("exec_ms", "warm", "warm"), ("client_ms", "cold", "cold"),
                                     ("client_ms", "warm", "warm"), ("memory_bytes", "warm", None),
                                     ("artefact_bytes", "static", None)):
            for n in store.concurrencies(b, metric, phase):
                xs = store.values(b, metric, phase=phase, concurrency=n, start=start)
                if xs:
                    rows.append({"backend": b, "metric": metric, "phase": phase, "concurrency": n,
                                 "count": len(xs), "mean": "%.4f" % mean(xs),
                                 "p50": "%.4f" % percentile(xs, 50), "p95": "%.4f" % percentile(xs, 95),
                                 "max": "%.4f" % max(xs)})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, ["backend", "metric", "phase", "concurrency", "count", "mean", "p50",
                               "p95", "max"], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
