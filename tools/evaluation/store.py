"""Raw samples on disk (CSV), kept so an interrupted evaluation resumes where it stopped.

samples.csv  one row per raw sample: an invocation's execution time (node and client side),
             an instance's initialisation time or memory, a function's artefact size.
runs.csv     one row per finished run (backend, phase, concurrency, repeat). A run's samples
             count only once its row is here: a run cut short is measured again on resume.
meta.json    the settings of the evaluation that wrote them.
"""

import csv
import io
import json
import math
import os

SAMPLE_FIELDS = ["backend", "phase", "concurrency", "repeat", "metric", "value", "start",
                 "instance", "status", "unix_time"]
RUN_FIELDS = ["backend", "phase", "concurrency", "repeat", "samples", "errors", "duration_s",
              "unix_time", "load1", "note"]


def run_key(backend, phase, concurrency, repeat):
    return (backend, phase, int(concurrency), int(repeat))


class Store:
    def __init__(self, out_dir):
        self.dir = out_dir
        self.samples_path = os.path.join(out_dir, "samples.csv")
        self.runs_path = os.path.join(out_dir, "runs.csv")
        self.meta_path = os.path.join(out_dir, "meta.json")
        self.samples = []   # dicts, values as read (strings) or written
        self.runs = {}      # run_key -> dict

    # -- reading --

    def load(self, rewrite=True):
        """Reads finished runs and their samples; with `rewrite`, drops samples of unfinished
        runs from samples.csv (before measuring more)."""
        self.runs = {}
        if os.path.exists(self.runs_path):
            with open(self.runs_path, newline="") as f:
                for row in _complete_rows(f, RUN_FIELDS):
                    self.runs[run_key(row["backend"], row["phase"], row["concurrency"],
                                      row["repeat"])] = row
        self.samples = []
        dropped = 0
        if os.path.exists(self.samples_path):
            with open(self.samples_path, newline="") as f:
                for row in _complete_rows(f, SAMPLE_FIELDS):
                    if run_key(row["backend"], row["phase"], row["concurrency"],
                               row["repeat"]) in self.runs:
                        self.samples.append(row)
                    else:
                        dropped += 1
        # Rewritten even when nothing was dropped: an interrupted append may have left a cut
        # last line that the next append would run into.
        if rewrite and os.path.exists(self.samples_path):
            self._rewrite(self.samples_path, SAMPLE_FIELDS, self.samples)
        if rewrite and os.path.exists(self.runs_path):
            self._rewrite(self.runs_path, RUN_FIELDS, list(self.runs.values()))
        return dropped

    def meta(self):
        if not os.path.exists(self.meta_path):
            return None
        with open(self.meta_path) as f:
            return json.load(f)

    def write_meta(self, meta):
        os.makedirs(self.dir, exist_ok=True)
        tmp = self.meta_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, self.meta_path)

    # -- writing --

    def done(self, backend, phase, concurrency, repeat):
        return run_key(backend, phase, concurrency, repeat) in self.runs

    def record_run(self, backend, phase, concurrency, repeat, rows, errors, duration_s,
                   unix_time, note=""):
        """Appends a finished run's samples, then its run row (each in one write)."""
        os.makedirs(self.dir, exist_ok=True)
        for r in rows:
            r.update(backend=backend, phase=phase, concurrency=concurrency, repeat=repeat)
            r.setdefault("unix_time", "%.3f" % unix_time)
        _append(self.samples_path, SAMPLE_FIELDS, rows)
        run = {"backend": backend, "phase": phase, "concurrency": concurrency, "repeat": repeat,
               "samples": len(rows), "errors": errors, "duration_s": "%.3f" % duration_s,
               "unix_time": "%.3f" % unix_time, "load1": "%.2f" % os.getloadavg()[0], "note": note}
        _append(self.runs_path, RUN_FIELDS, [run])
        self.samples.extend(rows)
        self.runs[run_key(backend, phase, concurrency, repeat)] = run

    @staticmethod
    def _rewrite(path, fields, rows):
        tmp = path + ".tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fields, extrasaction="ignore", lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, path)

    # -- views --

    def values(self, backend, metric, phase=None, concurrency=None, start=None):
        """Floats of the successful samples that match."""
        out = []
        for s in self.samples:
            if s["backend"] != backend or s["metric"] != metric:
                continue
            if phase is not None and s["phase"] != phase:
                continue
            if concurrency is not None and int(s["concurrency"]) != concurrency:
                continue
            if start is not None and s["start"] != start:
                continue
            if str(s.get("status", "")) not in ("", "200"):
                continue
            out.append(float(s["value"]))
        return out

    def backends(self):
        seen = []
        for s in self.samples:
            if s["backend"] not in seen:
                seen.append(s["backend"])
        return seen

    def concurrencies(self, backend, metric, phase):
        return sorted({int(s["concurrency"]) for s in self.samples
                       if s["backend"] == backend and s["metric"] == metric and s["phase"] == phase})


def _complete_rows(f, fields):
    """Rows of a CSV file whose last line may have been cut by an interruption."""
    text = f.read()
    if not text:
        return []
    if not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
    reader = csv.DictReader(text.splitlines())
    rows = list(reader)
    # A line cut short lacks the last columns of its header (an older file may lack newer
    # columns: those rows still count).
    last = (reader.fieldnames or [None])[-1]
    needed = [k for k in fields if k in (reader.fieldnames or [])]
    return [r for r in rows if r.get(last) is not None and all(r.get(k) is not None for k in needed)]


def _append(path, fields, rows):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fields, extrasaction="ignore", lineterminator="\n")
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        w.writeheader()
    w.writerows(rows)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        data = buf.getvalue().encode()
        while data:
            n = os.write(fd, data)
            data = data[n:]
    finally:
        os.close(fd)


# -- statistics --

def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def percentile(xs, p):
    """Linear interpolation between closest ranks (numpy's default)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(xs):
    return {"count": len(xs), "mean": mean(xs), "p50": percentile(xs, 50),
            "p95": percentile(xs, 95), "max": max(xs) if xs else float("nan"),
            "min": min(xs) if xs else float("nan")}
