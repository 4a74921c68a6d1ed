#!/usr/bin/env python3
"""faasvisor Python runtime: serves a module's handle(req) over the instance protocol.

Usage, run in the function's directory:

    python3 /path/to/runtimes/python/faasvisor_runtime.py MODULE

Speaks docs/protocol.md on fd 0 / fd 1 (stdlib only). With FAASVISOR_TEMPLATE_FD set (the
node does so for a function's template, docs/templates.md) it imports the module once and
then forks an instance per request from the node, each joining a pooled sandbox. The module's handle(req) gets a
Request and may return bytes, str, a dict (sent as JSON), None (empty body), or a tuple
(status, headers, body) / (status, body) where headers is a dict or a list of pairs.
An exception becomes a 500 with {"error": "<Type>: message"} and the instance lives on.
"""

import importlib
import json
import os
import signal
import struct
import sys
import traceback
import urllib.parse

MAGIC = 0x31505646
HEADER = struct.Struct("<IBBHI")  # magic, type, flags, reserved, length
HEADER_SIZE = HEADER.size
READY, REQUEST, RESPONSE, LOG, SHUTDOWN = 1, 2, 3, 4, 5
KNOWN_TYPES = (READY, REQUEST, RESPONSE, LOG, SHUTDOWN)
MAX_PAYLOAD = 16 * 1024 * 1024
MAX_HEADERS = 128
READY_MAX = 256
READY_TEXT = b"python"
EXIT_PROTOCOL = 2

# Header and path bytes are not guaranteed UTF-8; surrogateescape keeps them round-trippable.
TEXT_ERRORS = "surrogateescape"


class ProtocolError(Exception):
    """The node sent something the protocol does not allow: the instance must exit."""


class Request:
    """One invocation, as handed to handle(req)."""

    __slots__ = ("method", "path", "query", "headers", "body", "_args")

    def __init__(self, method, path, query, headers, body):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers  # list of (name, value) str pairs, in wire order
        self.body = body  # bytes
        self._args = None

    def header(self, name, default=None):
        """First header named name, ignoring case."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return default

    @property
    def args(self):
        """Query parameters, percent-decoded; for a repeated key the first value wins."""
        if self._args is None:
            parsed = {}
            for key, value in urllib.parse.parse_qsl(self.query, keep_blank_values=True):
                parsed.setdefault(key, value)
            self._args = parsed
        return self._args

    def __repr__(self):
        return f"Request({self.method} {self.path}?{self.query}, {len(self.body)} bytes)"


# ---- codec ----


def encode_frame(frame_type, payload):
    return HEADER.pack(MAGIC, frame_type, 0, 0, len(payload)) + payload


def parse_header(data):
    """Validates a 12-byte frame header; returns (type, length)."""
    magic, frame_type, flags, reserved, length = HEADER.unpack(data)
    if magic != MAGIC:
        raise ProtocolError("bad magic")
    if frame_type not in KNOWN_TYPES:
        raise ProtocolError(f"unknown frame type {frame_type}")
    if flags != 0 or reserved != 0:
        raise ProtocolError("non-zero reserved bits")
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"frame too large ({length} bytes)")
    if frame_type == READY and length > READY_MAX:
        raise ProtocolError("frame too large (READY)")
    if frame_type == SHUTDOWN and length != 0:
        raise ProtocolError("malformed payload (SHUTDOWN with a payload)")
    return frame_type, length


class _Reader:
    """A cursor over a payload that refuses to run past its end."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def u32(self):
        if len(self.data) - self.pos < 4:
            raise ProtocolError("malformed payload")
        (value,) = struct.unpack_from("<I", self.data, self.pos)
        self.pos += 4
        return value

    def raw(self):
        n = self.u32()
        if n > len(self.data) - self.pos:
            raise ProtocolError("malformed payload")
        value = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return value

    def text(self):
        return self.raw().decode("utf-8", TEXT_ERRORS)

    def finish(self):
        if self.pos != len(self.data):
            raise ProtocolError("malformed payload (trailing bytes)")


def decode_request(payload):
    r = _Reader(payload)
    method, path, query = r.text(), r.text(), r.text()
    count = r.u32()
    if count > MAX_HEADERS:
        raise ProtocolError("too many headers")
    headers = [(r.text(), r.text()) for _ in range(count)]
    body = r.raw()
    r.finish()
    return Request(method, path, query, headers, body)


def _put_str(parts, data):
    parts.append(struct.pack("<I", len(data)))
    parts.append(data)


def encode_response(status, headers, body):
    if not 100 <= status <= 599:
        raise ValueError(f"status {status} outside 100..599")
    if len(headers) > MAX_HEADERS:
        raise ValueError(f"{len(headers)} headers (at most {MAX_HEADERS})")
    parts = [struct.pack("<HHI", status, 0, len(headers))]
    for name, value in headers:
        _put_str(parts, name.encode("utf-8", TEXT_ERRORS))
        _put_str(parts, value.encode("utf-8", TEXT_ERRORS))
    _put_str(parts, body)
    payload = b"".join(parts)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"response payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return encode_frame(RESPONSE, payload)


# ---- turning a handler's result into a response ----


def _body_of(value, headers):
    """Body bytes for a handler value; adds a Content-Type when the type implies one."""
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        _default_header(headers, "Content-Type", "text/plain; charset=utf-8")
        return value.encode("utf-8")
    if isinstance(value, (dict, list)):
        _default_header(headers, "Content-Type", "application/json")
        return json.dumps(value).encode("utf-8")
    raise TypeError(f"handler returned a body of type {type(value).__name__}")


def _default_header(headers, name, value):
    if not any(key.lower() == name.lower() for key, _ in headers):
        headers.append((name, value))


def _headers_of(value):
    if value is None:
        return []
    items = value.items() if isinstance(value, dict) else value
    headers = []
    for name, val in items:
        if not isinstance(name, str) or not isinstance(val, str):
            raise TypeError("header names and values must be str")
        headers.append((name, val))
    return headers


def response_of(result):
    """Maps a handler's return value to (status, headers, body)."""
    status, headers, body = 200, [], result
    if isinstance(result, tuple):
        if len(result) == 3:
            status, header_value, body = result
            headers = _headers_of(header_value)
        elif len(result) == 2:
            status, body = result
        else:
            raise TypeError("a tuple result must be (status, headers, body) or (status, body)")
        if not isinstance(status, int) or isinstance(status, bool):
            raise TypeError("status must be an int")
    return status, headers, _body_of(body, headers)


def error_response(exc):
    body = json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode("utf-8")
    return encode_response(500, [("Content-Type", "application/json")], body)


# ---- transport ----


class Channel:
    """Blocking frame I/O on two raw fds (kept out of the handler's reach)."""

    def __init__(self, in_fd, out_fd):
        self.in_fd = in_fd
        self.out_fd = out_fd
        # Bytes read past the last frame asked for: each read takes at least 4 KiB when the
        # stream has them, so a small REQUEST (header and payload) costs one read(), not two.
        self.pending = b""

    def read_exact(self, n):
        """n bytes, or fewer only at end of stream."""
        if len(self.pending) >= n:
            out, self.pending = self.pending[:n], self.pending[n:]
            return out
        chunks = [self.pending]
        left = n - len(self.pending)
        self.pending = b""
        while left > 0:
            chunk = os.read(self.in_fd, min(max(left, 4096), 1 << 20))
            if not chunk:
                break
            if len(chunk) > left:
                chunk, self.pending = chunk[:left], chunk[left:]
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def read_frame(self):
        """(type, payload), or None at a clean end of stream."""
        header = self.read_exact(HEADER_SIZE)
        if not header:
            return None
        if len(header) < HEADER_SIZE:
            raise ProtocolError("end of stream inside a frame header")
        frame_type, length = parse_header(header)
        payload = self.read_exact(length)
        if len(payload) < length:
            raise ProtocolError("end of stream inside a frame payload")
        return frame_type, payload

    def write_all(self, data):
        view = memoryview(data)
        while view:
            written = os.write(self.out_fd, view)
            view = view[written:]


def take_stdio():
    """Moves the protocol off fds 0/1 so handlers cannot corrupt it: print() and writes to
    fd 1 go to stderr, reads from fd 0 see /dev/null."""
    in_fd = os.dup(0)
    out_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    sys.stdin = open(os.devnull, "r")
    return Channel(in_fd, out_fd)


def serve_one(handler, payload):
    """Runs one invocation; returns the RESPONSE frame bytes. Never raises for handler faults."""
    request = decode_request(payload)  # ProtocolError propagates: the node sent junk
    try:
        status, headers, body = response_of(handler(request))
        return encode_response(status, headers, body)
    except Exception as exc:  # the handler's fault: answer 500, keep the instance
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        return error_response(exc)


def serve(channel, handler):
    while True:
        frame = channel.read_frame()
        if frame is None:
            return
        frame_type, payload = frame
        if frame_type == SHUTDOWN:
            return
        if frame_type != REQUEST:
            raise ProtocolError(f"unexpected frame type {frame_type} from the node")
        channel.write_all(serve_one(handler, payload))


def _on_sigterm(signum, frame):
    # pid 1 in a pid namespace ignores SIGTERM/SIGINT unless it has a handler; exit at once
    # even mid-invocation, as the C SDK does.
    os._exit(0)


def load_handler(name):
    sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name).handle
    except Exception:
        traceback.print_exc(file=sys.stderr)
        print(f"faasvisor runtime: cannot load handle() from module {name!r}", file=sys.stderr)
        return None


# ---- template mode (docs/templates.md) ----

TEMPLATE_READY = b"R"  # template -> node: imported, ready to fork (then the runtime's name)
TEMPLATE_FORK = b"F"   # node -> template: fork a child into a stem, with
TEMPLATE_NAMESPACES = 5  # the stem's mount, net, ipc, uts and pid_for_children namespaces
TEMPLATE_MAX_MESSAGE = 4096


def template_serve(ctl_fd):
    """The template's loop: fork an instance per FORK message. Returns only in the forked
    instance (its instance name), or None once the node closes the socket."""
    import ctypes
    import socket

    lib = ctypes.CDLL(os.environ["FAASVISOR_TEMPLATE_LIB"], use_errno=True)
    lib.fv_template_enter.argtypes = (ctypes.POINTER(ctypes.c_int), ctypes.c_char_p)
    lib.fv_template_wait.argtypes = (ctypes.c_int, ctypes.c_int)
    lib.fv_template_finish.argtypes = (ctypes.c_int,)
    lib.fv_template_await_start.argtypes = (ctypes.c_char_p, ctypes.c_int)
    name = ctypes.create_string_buffer(256)
    directory = os.fsencode(os.getcwd())
    ctl = socket.socket(fileno=ctl_fd)
    # Children (C1, one per instance) are reaped by the kernel; each waits for its own C2.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    ctl.send(TEMPLATE_READY + READY_TEXT)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(ctl, TEMPLATE_MAX_MESSAGE, TEMPLATE_NAMESPACES)
        except InterruptedError:
            continue
        if not message:
            return None
        if message[:1] != TEMPLATE_FORK or len(fds) != TEMPLATE_NAMESPACES:
            for fd in fds:
                os.close(fd)
            print("faasvisor runtime: bad message from the node on the template socket", file=sys.stderr)
            return None
        sys.stderr.flush()
        if os.fork() != 0:
            for fd in fds:
                os.close(fd)
            continue
        # C1: into the stem's namespaces and cgroups, then the instance is our child. The
        # control socket is the template's alone: its end must be the node's end of stream.
        ctl.close()
        try:
            sock = lib.fv_template_enter((ctypes.c_int * len(fds))(*fds), directory)
            if sock < 0:
                os._exit(127)
            child = os.fork()
            if child != 0:
                lib.fv_template_wait(child, sock)  # does not return
                os._exit(127)
            # C2: the instance, born in the stem's pid namespace and cgroups, and a primed
            # sandbox until a cold start names it: all that is left to do then is below.
            if lib.fv_template_await_start(name, len(name)) <= 0:
                os._exit(0)
            if lib.fv_template_finish(sock) < 0:
                os._exit(127)
        except BaseException:
            traceback.print_exc(file=sys.stderr)
            os._exit(127)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        return name.value.decode("utf-8", TEXT_ERRORS)


def reseed():
    """Every instance forked from one template starts from the same memory: give each its
    own random state (os.urandom and the secrets module read the kernel and need nothing;
    str hashes stay as the template's PYTHONHASHSEED made them, docs/templates.md)."""
    import random

    random.seed()  # again: the C1 fork's hook seeded it, C2 is a plain copy of C1
    if "numpy" in sys.modules:
        _reseed_numpy(sys.modules["numpy"])


def _reseed_numpy(numpy):
    try:
        numpy.random.seed(int.from_bytes(os.urandom(4), "little"))
    except Exception:  # an old or partial numpy: nothing to reseed
        pass


def template_main(name, ctl_fd):
    import random  # noqa: F401  here, not in each instance: its at-fork hook reseeds it

    # Nothing is served on the template's own fds 0/1; print() at import goes to stderr.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    handler = load_handler(name)
    if handler is None:
        return 1
    instance = template_serve(ctl_fd)
    if instance is None:
        return 0
    os.environ["FAASVISOR_INSTANCE"] = instance
    os.environ["FAASVISOR_FROM_TEMPLATE"] = "1"
    reseed()
    return run_instance(take_stdio(), handler)


def main(argv):
    if len(argv) != 2:
        print("usage: faasvisor_runtime.py MODULE", file=sys.stderr)
        return 64
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, _on_sigterm)
    ctl_fd = os.environ.pop("FAASVISOR_TEMPLATE_FD", None)
    if ctl_fd is not None:
        return template_main(argv[1], int(ctl_fd))
    channel = take_stdio()
    handler = load_handler(argv[1])
    if handler is None:
        return 1
    return run_instance(channel, handler)


def run_instance(channel, handler):
    try:
        channel.write_all(encode_frame(READY, READY_TEXT))
        serve(channel, handler)
    except ProtocolError as exc:
        print(f"faasvisor runtime: protocol error: {exc}", file=sys.stderr)
        return EXIT_PROTOCOL
    except OSError as exc:
        print(f"faasvisor runtime: I/O error: {exc}", file=sys.stderr)
        return EXIT_PROTOCOL
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
