#!/usr/bin/env python3
"""Runs the faasvisord integration tests.

    tests/integration/run.py [--build DIR] [-k PATTERN] [-v]

Starts real daemons from DIR (default: <repo>/build), so it needs root (namespaces, cgroups).
Ends with exactly one summary line "N passed, N failed" and exits non-zero on any failure.
A failed leak check after a test class's daemon stops counts as one more failure.
"""

import argparse
import os
import sys
import time
import traceback
import unittest

from buildinfo import is_sanitized

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class CountingResult(unittest.TextTestResult):
    """Counts each test once, as passed or failed (a failed subtest fails its test); errors
    in class fixtures (e.g. a leak found after a class's daemon stopped) count as failures."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outcome = {}  # test id -> True (passed) / False (failed), in order of first report
        self._started = {}
        # Wall time per test module, class fixtures included: the time from the previous
        # test's end to this one's end goes to this test's module (a class's set-up runs
        # just before its first test). tools/test's budget is read from these.
        self.module_seconds = {}
        self._last_stop = time.monotonic()

    def _mark(self, test, ok):
        key = test.id() if hasattr(test, "id") else str(test)
        if key not in self.outcome or not ok:
            self.outcome[key] = ok and self.outcome.get(key, True)

    @property
    def passed(self):
        return sum(1 for ok in self.outcome.values() if ok)

    @property
    def failed_names(self):
        return [k for k, ok in self.outcome.items() if not ok]

    @property
    def failed(self):
        return len(self.failed_names)

    def startTest(self, test):
        self._started[test.id()] = time.monotonic()
        super().startTest(test)

    def stopTest(self, test):
        super().stopTest(test)
        now = time.monotonic()
        module = type(test).__module__
        self.module_seconds[module] = self.module_seconds.get(module, 0.0) + now - self._last_stop
        self._last_stop = now

    def addSuccess(self, test):
        super().addSuccess(test)
        self._mark(test, True)
        if self.showAll:
            t0 = self._started.get(test.id())
            if t0 is not None:
                self.stream.writeln("    took %.2fs" % (time.monotonic() - t0))

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._mark(test, False)

    def addError(self, test, err):
        super().addError(test, err)
        self._mark(test, False)

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._mark(test, False)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._mark(test, True)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._mark(test, False)


class Runner(unittest.TextTestRunner):
    resultclass = CountingResult


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip())
    parser.add_argument("--build", default=os.path.join(ROOT, "build"),
                        help="meson build directory holding src/faasvisord (default: build)")
    parser.add_argument("-k", dest="patterns", action="append", default=[],
                        help="only tests whose id contains PATTERN (fnmatch * allowed; repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per test")
    args = parser.parse_args()

    build = os.path.abspath(args.build)
    os.environ["FV_BUILD"] = build
    daemon = os.path.join(build, "src", "faasvisord")
    if "FV_TIME_SCALE" not in os.environ:
        os.environ["FV_TIME_SCALE"] = "3" if is_sanitized(daemon) else "1"
    if not os.access(daemon, os.X_OK):
        print("cannot run %s: build it first (ninja -C %s)" % (daemon, build), file=sys.stderr)
        print("0 passed, 1 failed")
        return 1
    sys.path.insert(0, HERE)

    loader = unittest.TestLoader()
    if args.patterns:
        loader.testNamePatterns = [p if "*" in p else "*%s*" % p for p in args.patterns]
    try:
        suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    except Exception:  # noqa: BLE001 - an import error is one failure, reported
        traceback.print_exc()
        print("0 passed, 1 failed")
        return 1

    started = time.monotonic()
    print("faasvisor integration tests: build %s, time scale %s"
          % (build, os.environ["FV_TIME_SCALE"]), file=sys.stderr)
    result = Runner(verbosity=2 if args.verbose else 1, stream=sys.stderr).run(suite)
    # Loader errors (a module that fails to import) show up as failed tests already.
    elapsed = time.monotonic() - started
    if result.failed_names:
        print("failed:", file=sys.stderr)
        for name in result.failed_names:
            print("  " + name, file=sys.stderr)
    slowest = sorted(result.module_seconds.items(), key=lambda kv: -kv[1])
    print("time per module: " + ", ".join("%s %.0fs" % kv for kv in slowest), file=sys.stderr)
    print("took %.1fs" % elapsed, file=sys.stderr)
    sys.stderr.flush()
    skipped = len(result.skipped)
    print("%d passed, %d failed%s" % (result.passed, result.failed,
                                      ", %d skipped" % skipped if skipped else ""))
    return 0 if result.failed == 0 and result.passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
