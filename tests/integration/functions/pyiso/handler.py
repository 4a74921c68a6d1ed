"""pyiso: what a Python function sees of its sandbox, as JSON (the Python twin of
tests/functions/isolation.c, for instances forked from a template, docs/templates.md).

?mode=report (default): pids visible, writes to / and /tmp, uid, network interfaces, a
connect beyond loopback, capabilities, no_new_privs, seccomp (and whether unshare and setns
are refused), open descriptors, whether the
instance came from a template, random draws. ?mode=tmp&tag=X writes /tmp/tag and lists /tmp.
?mode=alloc&mib=N touches N MiB."""

import ctypes
import errno
import os
import random
import socket

IMPORTED_IN = os.getpid()  # at import: the template's pid for a template-born instance
_held = []


def _errno_name(exc):
    return errno.errorcode.get(exc.errno, str(exc.errno))


def _try_write(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        os.unlink(path)
        return "ok"
    except OSError as exc:
        return _errno_name(exc)


def _status():
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def _connect():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        s.connect(("192.0.2.1", 80))
        return "connected"
    except OSError as exc:
        return _errno_name(exc) if exc.errno else "timeout"
    finally:
        s.close()


def _fds():
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[name] = os.readlink("/proc/self/fd/" + name)
        except OSError:
            pass  # the directory's own descriptor, closed by now
    return out


def _syscall_errno(name, *args):
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) == 0:
        return "ok"
    return errno.errorcode.get(ctypes.get_errno(), "?")


def report():
    status = _status()
    return {
        "pids": sum(1 for n in os.listdir("/proc") if n.isdigit()),
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "root_write": _try_write("/faasvisor-probe"),
        "tmp_write": _try_write("/tmp/faasvisor-probe"),
        "uid": os.getuid(),
        "interfaces": sorted(name for _, name in socket.if_nameindex()),
        "connect": _connect(),
        "cap_eff": status["CapEff"],
        "cap_prm": status["CapPrm"],
        "cap_amb": status.get("CapAmb", "0"),
        "cap_bnd": status["CapBnd"],
        "no_new_privs": int(status["NoNewPrivs"]),
        "seccomp": int(status["Seccomp"]),
        "seccomp_filters": int(status.get("Seccomp_filters", "0")),
        "unshare_user": _syscall_errno("unshare", 0x10000000),  # CLONE_NEWUSER
        "setns": _syscall_errno("setns", 0, 0),  # the filter says EPERM before the kernel EINVAL
        "fds": _fds(),
        "from_template": os.environ.get("FAASVISOR_FROM_TEMPLATE") == "1",
        "instance": os.environ.get("FAASVISOR_INSTANCE"),
        "imported_in_this_process": IMPORTED_IN == os.getpid(),
        "random": random.random(),
        "urandom": os.urandom(8).hex(),
        "cwd": os.getcwd(),
    }


def handle(req):
    mode = req.args.get("mode", "report")
    if mode == "tmp":
        with open("/tmp/" + req.args["tag"], "w") as f:
            f.write(req.args["tag"])
        return {"tmp": sorted(os.listdir("/tmp"))}
    if mode == "alloc":
        block = bytearray(int(req.args["mib"]) << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        _held.append(block)
        return "allocated %s MiB" % req.args["mib"]
    return report()
