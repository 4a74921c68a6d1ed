"""PNG figures laid out like the study's: 5.1 memory per instance, 5.2 a-d times against
simultaneous invocations (mean solid, 95th percentile dashed, one colour per backend),
5.3 artefact size. Needs python3-matplotlib (Debian)."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from .store import mean, percentile  # noqa: E402

COLOURS = {"process": "#7f7f7f", "crun": "#1f77b4", "runc": "#17becf", "gvisor": "#2ca02c",
           "microvm": "#ff7f0e", "unikernel": "#d62728"}
EXTRA = ["#9467bd", "#8c564b", "#e377c2", "#bcbd22"]
DPI = 90
SIZE = (7.0, 4.2)

# (file, title, metric, phase, start, y label) of the line figures
TIME_FIGURES = [
    ("fig5_2a_init.png", "(a) Instance initialisation time (launch to ready)", "init_ms", "cold", None),
    ("fig5_2b_cold.png", "(b) Cold-start execution time", "exec_ms", "cold", "cold"),
    ("fig5_2c_warm.png", "(c) Warm-start execution time", "exec_ms", "warm", None),
]
GAP_FIGURE = ("fig5_2d_gap.png", "(d) Mean cold-start minus mean warm-start execution time")
MEMORY_FIGURE = "fig5_1_memory.png"
ARTEFACT_FIGURE = "fig5_3_artefact.png"


def colour(backend, order):
    if backend in COLOURS:
        return COLOURS[backend]
    return EXTRA[order.index(backend) % len(EXTRA)]


def series(store, backend, metric, phase, start):
    """[(n, mean, p95, count)] for each concurrency measured."""
    out = []
    for n in store.concurrencies(backend, metric, phase):
        xs = store.values(backend, metric, phase=phase, concurrency=n, start=start)
        if xs:
            out.append((n, mean(xs), percentile(xs, 95), len(xs)))
    return out


def _log_if_wide(ax, values):
    values = [v for v in values if v > 0 and not math.isnan(v)]
    if values and max(values) / min(values) > 30:
        ax.set_yscale("log")
        return True
    return False


def time_figure(store, backends, path, title, metric, phase, start):
    fig, ax = plt.subplots(figsize=SIZE)
    ys = []
    for b in backends:
        s = series(store, b, metric, phase, start)
        if not s:
            continue
        xs = [p[0] for p in s]
        c = colour(b, backends)
        ax.plot(xs, [p[1] for p in s], "-o", color=c, markersize=3, label="%s mean" % b)
        ax.plot(xs, [p[2] for p in s], "--", color=c, linewidth=1, label="%s p95" % b)
        ys += [p[1] for p in s] + [p[2] for p in s]
    log = _log_if_wide(ax, ys)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("simultaneous invocations")
    ax.set_ylabel("ms" + (" (log scale)" if log else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return log


def gap_figure(store, backends, path, title):
    fig, ax = plt.subplots(figsize=SIZE)
    ys = []
    for b in backends:
        cold = {n: m for n, m, _p, _c in series(store, b, "exec_ms", "cold", "cold")}
        warm = {n: m for n, m, _p, _c in series(store, b, "exec_ms", "warm", None)}
        xs = sorted(set(cold) & set(warm))
        if not xs:
            continue
        gap = [cold[n] - warm[n] for n in xs]
        ax.plot(xs, gap, "-o", color=colour(b, backends), markersize=3, label=b)
        ys += gap
    log = bool(ys) and min(ys) > 0 and _log_if_wide(ax, ys)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("simultaneous invocations")
    ax.set_ylabel("ms" + (" (log scale)" if log else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return log


MEMORY_BARS = [  # (metric, fewest or most instances, label, hatch)
    ("rss_bytes", 0, "RSS, fewest instances (the study's measure)", ""),
    ("pss_bytes", 0, "PSS, fewest instances", "//"),
    ("pss_bytes", -1, "PSS, most instances", "xx"),
    ("memory_bytes", 0, "node's measure, fewest instances", ".."),
]


def memory_values(store, b):
    """{(metric, end): (mean MiB, p95 MiB, n)} of the memory bars."""
    out = {}
    for metric, end, _label, _hatch in MEMORY_BARS:
        ns = store.concurrencies(b, metric, "warm")
        if ns:
            xs = store.values(b, metric, "warm", ns[end])
            out[(metric, end)] = (mean(xs) / 2**20, percentile(xs, 95) / 2**20, ns[end])
    return out


def memory_figure(store, backends, path):
    """Grouped bars per backend: RSS and PSS per instance with the fewest instances running,
    PSS with the most (PSS divides shared pages among the processes that map them, so it falls
    as instances are added), and the node's own measure."""
    fig, ax = plt.subplots(figsize=(SIZE[0] + 1, SIZE[1]))
    names = [b for b in backends if memory_values(store, b)]
    w = 0.8 / len(MEMORY_BARS)
    for k, (metric, end, label, hatch) in enumerate(MEMORY_BARS):
        xs, hs, cs, ann = [], [], [], []
        for i, b in enumerate(names):
            v = memory_values(store, b).get((metric, end))
            if v is None:
                continue
            xs.append(i - 0.4 + w * (k + 0.5))
            hs.append(v[0])
            cs.append(colour(b, backends))
            ann.append(v)
        bars = ax.bar(xs, hs, w, color=cs, edgecolor="black", hatch=hatch, alpha=1.0 - 0.15 * k,
                      label=label)
        for bar, v in zip(bars, ann):
            ax.annotate("%.1f" % v[0], (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=6)
    log = _log_if_wide(ax, [v[0] for b in names for v in memory_values(store, b).values()])
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names)
    ax.set_ylabel("MiB per instance" + (" (log scale)" if log else ""))
    ax.set_title("Memory per function instance", fontsize=10)
    ax.legend(loc="upper left", handles=[Patch(facecolor="white", edgecolor="black", hatch=hatch, label=label)
                       for _m, _e, label, hatch in MEMORY_BARS], fontsize=7)
    ax.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return log


def artefact_figure(store, backends, path):
    fig, ax = plt.subplots(figsize=SIZE)
    names, sizes = [], []
    for b in backends:
        xs = store.values(b, "artefact_bytes", "static")
        if xs:
            names.append(b)
            sizes.append(xs[-1] / 1024)
    bars = ax.bar(range(len(names)), sizes, color=[colour(b, backends) for b in names],
                  edgecolor="black")
    for bar, v in zip(bars, sizes):
        ax.annotate("%.0f" % v, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names)
    ax.set_ylabel("KiB")
    ax.set_title("Function artefact size", fontsize=10)
    ax.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def draw_all(store, backends, out_dir):
    """Writes every figure; returns {file: uses a log scale}."""
    import os
    logs = {}
    for fname, title, metric, phase, start in TIME_FIGURES:
        logs[fname] = time_figure(store, backends, os.path.join(out_dir, fname), title, metric, phase, start)
    logs[GAP_FIGURE[0]] = gap_figure(store, backends, os.path.join(out_dir, GAP_FIGURE[0]), GAP_FIGURE[1])
    logs[MEMORY_FIGURE] = memory_figure(store, backends, os.path.join(out_dir, MEMORY_FIGURE))
    artefact_figure(store, backends, os.path.join(out_dir, ARTEFACT_FIGURE))
    logs[ARTEFACT_FIGURE] = False
    return logs
