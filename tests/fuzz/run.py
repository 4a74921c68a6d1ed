#!/usr/bin/env python3
"""Builds the libFuzzer targets (clang, ASan+UBSan) and runs each for a bounded time.

    tests/fuzz/run.py [--build DIR] [--seconds 30] [--build-only] [TARGET...]

The build directory (default <repo>/build-fuzz) is configured on first use with clang and
-Dfuzz=true -Db_sanitize=address,undefined; only the fuzz targets and what they link are
built. Each target starts from its committed seeds in tests/fuzz/corpus/<target> (read only)
and writes what it discovers to a scratch corpus. A finding (a crash, a sanitizer report, a
leak, a timeout of one input, running out of memory) fails the target and keeps the input
that caused it; a clean run passes. Ends with one line "N passed, N failed".
bench/fuzz uses the same functions for long runs.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")
TARGETS = ("http_parser_fuzz", "frame_fuzz", "deploy_fuzz", "image_fuzz")
# One input taking longer than this is a finding (a hang), as is a process above this RSS.
INPUT_TIMEOUT_S = 10
RSS_LIMIT_MB = 2048
FINDING_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "ERROR: libFuzzer", "ALARM: working on the last Unit",
                   "out-of-memory", "deadly signal")


def clang():
    """(cc, cxx) of clang 14 or the unversioned clang, or None when not installed."""
    for cc, cxx in (("clang-14", "clang++-14"), ("clang", "clang++")):
        if shutil.which(cc) and shutil.which(cxx):
            return cc, cxx
    return None


def libfuzzer_links(cxx):
    """Whether clang can link a libFuzzer program (libclang-rt-14-dev is installed)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "t.cc")
        with open(src, "w") as f:
            f.write('#include <cstddef>\n#include <cstdint>\n'
                    'extern "C" int LLVMFuzzerTestOneInput(const uint8_t *, size_t) { return 0; }\n')
        r = subprocess.run([cxx, "-fsanitize=fuzzer,address,undefined", src, "-o", os.path.join(tmp, "t")],
                           capture_output=True)
        return r.returncode == 0


def why_unavailable():
    """None if fuzz targets can be built here, else the reason."""
    tools = clang()
    if tools is None:
        return "clang is not installed (tools/setup installs clang-14 and libclang-rt-14-dev)"
    if not libfuzzer_links(tools[1]):
        return "%s cannot link -fsanitize=fuzzer (libclang-rt-14-dev missing?)" % tools[1]
    return None


def build(build_dir, targets):
    """Configures build_dir for fuzzing if needed and builds the targets; returns their paths."""
    cc, cxx = clang()
    if not os.path.exists(os.path.join(build_dir, "build.ninja")):
        env = dict(os.environ, CC=cc, CXX=cxx)
        subprocess.run(["meson", "setup", build_dir, ROOT, "-Dfuzz=true", "-Dwerror=true",
                        "-Db_sanitize=address,undefined", "-Db_lundef=false"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["ninja", "-C", build_dir] + ["tests/" + t for t in targets], check=True,
                   stdout=subprocess.DEVNULL)
    return {t: os.path.join(build_dir, "tests", t) for t in targets}


def parse_output(text):
    """Figures from libFuzzer's output: execs, exec/s, cov, ft, corpus units, peak RSS."""
    out = {"execs": None, "exec_per_s": None, "cov": None, "ft": None, "corpus": None,
           "new_units": None, "peak_rss_mb": None, "seeds": None}
    for key, name in (("execs", "number_of_executed_units"), ("exec_per_s", "average_exec_per_sec"),
                      ("new_units", "new_units_added"), ("peak_rss_mb", "peak_rss_mb")):
        m = re.search(r"^stat::%s:\s+(\d+)" % name, text, re.M)
        if m:
            out[key] = int(m.group(1))
    # Status lines: "#262809  DONE   cov: 1234 ft: 5678 corp: 850/60Kb ..." (the last is final).
    for m in re.finditer(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/", text, re.M):
        out["cov"], out["ft"], out["corpus"] = int(m.group(2)), int(m.group(3)), int(m.group(4))
    m = re.search(r"INFO: seed corpus: files: (\d+)", text)
    if m:
        out["seeds"] = int(m.group(1))
    return out


def run_target(binary, target, seconds, work_dir, extra=(), echo=False):
    """Runs one target for `seconds` on its seeds; returns (ok, figures, output, artifacts)."""
    scratch = os.path.join(work_dir, target + "-corpus")
    artifacts = os.path.join(work_dir, target + "-findings") + os.sep
    os.makedirs(scratch, exist_ok=True)
    os.makedirs(artifacts, exist_ok=True)
    seeds = os.path.join(CORPUS, target)
    cmd = [binary, "-max_total_time=%d" % seconds, "-timeout=%d" % INPUT_TIMEOUT_S,
           "-rss_limit_mb=%d" % RSS_LIMIT_MB, "-print_final_stats=1", "-artifact_prefix=" + artifacts,
           *extra, scratch, seeds]
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env)
    lines = []
    for raw in proc.stdout:
        line = raw.decode("utf-8", "replace")
        lines.append(line)
        if echo:
            sys.stdout.write(line)
            sys.stdout.flush()
    rc = proc.wait()
    text = "".join(lines)
    figures = parse_output(text)
    figures["seconds"] = time.monotonic() - started
    found = sorted(os.listdir(artifacts))
    # The recommended dictionary quotes fuzzed bytes, which could spell a marker.
    report = re.sub(r"###### Recommended dictionary\. ######.*?###### End of recommended dictionary\. ######",
                    "", text, flags=re.S)
    marker = next((m for m in FINDING_MARKERS if m in report), None)
    ok = rc == 0 and not found and marker is None
    figures["finding"] = None if ok else (marker or "exit status %d" % rc)
    return ok, figures, text, [os.path.join(artifacts, f) for f in found]


def describe(target, figures):
    f = figures
    execs = f["execs"] if f["execs"] is not None else "?"
    return ("%s: %s execs in %.0f s (%s exec/s), cov %s ft %s, corpus %s units (%s new), peak RSS %s MB"
            % (target, execs, f["seconds"], f["exec_per_s"], f["cov"], f["ft"], f["corpus"],
               f["new_units"], f["peak_rss_mb"]))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--build", default=os.path.join(ROOT, "build-fuzz"))
    p.add_argument("--seconds", type=int, default=30, help="per target (default 30)")
    p.add_argument("--build-only", action="store_true")
    p.add_argument("targets", nargs="*", default=list(TARGETS))
    args = p.parse_args()
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        sys.exit("fuzz: unknown target(s) %s; targets: %s" % (", ".join(unknown), ", ".join(TARGETS)))
    why = why_unavailable()
    if why:
        # Not a pass: the summary says nothing ran, and the exit status says why.
        print("fuzz: cannot build the fuzz targets: " + why)
        print("0 passed, %d failed" % len(args.targets))
        return 1
    binaries = build(os.path.abspath(args.build), args.targets)
    if args.build_only:
        print("fuzz: built %s in %s" % (", ".join(args.targets), args.build))
        return 0
    passed = failed = 0
    work = tempfile.mkdtemp(prefix="faasvisor-fuzz-")
    for target in args.targets:
        ok, figures, text, found = run_target(binaries[target], target, args.seconds, work)
        print(("PASS " if ok else "FAIL ") + describe(target, figures), flush=True)
        if ok:
            passed += 1
        else:
            failed += 1
            print("  finding: %s; inputs kept: %s" % (figures["finding"], ", ".join(found) or "none"))
            print("  reproduce: %s %s" % (binaries[target], found[0] if found else ""))
            print("".join(text.splitlines(True)[-60:]))
    if failed == 0:
        shutil.rmtree(work, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
