"""Self-test of runtimes/python/faasvisor_runtime.py: spawns the real runtime with pipes and
speaks the protocol to it (frames are built here independently of the runtime's codec).

Run: python3 tests/unit/test_python_runtime.py
"""

import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNTIME = REPO / "runtimes" / "python" / "faasvisor_runtime.py"
PYECHO = REPO / "examples" / "pyecho"
MAGIC = b"FVP1"
READY, REQUEST, RESPONSE, LOG, SHUTDOWN = 1, 2, 3, 4, 5
TIMEOUT_S = 20

# A handler that misbehaves in the ways a user's code does.
FAULTY_MODULE = textwrap.dedent(
    '''
    def handle(req):
        print("this goes to stderr, not into the protocol stream")
        if req.path == "/boom":
            raise ValueError("nope")
        if req.path == "/json":
            return {"args": req.args, "method": req.method}
        if req.path == "/text":
            return "hello"
        if req.path == "/status":
            return 418, [("X-A", "1"), ("X-B", "2")], b"teapot"
        if req.path == "/badstatus":
            return 99, {}, b""
        if req.path == "/badtype":
            return 12345
        return req.body
    '''
)


def frame(frame_type, payload=b""):
    return MAGIC + struct.pack("<BBHI", frame_type, 0, 0, len(payload)) + payload


def put_str(data):
    if isinstance(data, str):
        data = data.encode()
    return struct.pack("<I", len(data)) + data


def request(method="POST", path="/", query="", headers=(), body=b""):
    payload = put_str(method) + put_str(path) + put_str(query)
    payload += struct.pack("<I", len(headers))
    for name, value in headers:
        payload += put_str(name) + put_str(value)
    return frame(REQUEST, payload + put_str(body))


def decode_response(payload):
    status, reserved, count = struct.unpack_from("<HHI", payload, 0)
    pos = 8

    def take():
        nonlocal pos
        (n,) = struct.unpack_from("<I", payload, pos)
        value = payload[pos + 4 : pos + 4 + n]
        pos += 4 + n
        return value

    headers = [(take().decode(), take().decode()) for _ in range(count)]
    body = take()
    assert reserved == 0 and pos == len(payload), "response payload not consumed exactly"
    return status, headers, body


class Instance:
    """The runtime as a child process with its stdin/stdout as pipes."""

    def __init__(self, module, cwd):
        self.proc = subprocess.Popen(
            [sys.executable, str(RUNTIME), module],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.result = None

    def read_exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.proc.stdout.read(n - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def read_frame(self):
        header = self.read_exact(12)
        if len(header) < 12:
            return None
        assert header[:4] == MAGIC, header
        frame_type, flags, reserved, length = struct.unpack("<BBHI", header[4:])
        assert flags == 0 and reserved == 0
        return frame_type, self.read_exact(length)

    def send(self, data):
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # it already gave up on the stream; close() reports how it exited

    def invoke(self, **kwargs):
        self.send(request(**kwargs))
        frame_type, payload = self.read_frame()
        assert frame_type == RESPONSE, frame_type
        return decode_response(payload)

    def close(self):
        """Closes its input; returns (exit code, stderr text, unread stdout bytes)."""
        if self.result is None:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            rest = self.proc.stdout.read()
            err = self.proc.stderr.read().decode(errors="replace")
            code = self.proc.wait(timeout=TIMEOUT_S)
            self.proc.stdout.close()
            self.proc.stderr.close()
            self.result = (code, err, rest)
        return self.result


class PythonRuntimeTest(unittest.TestCase):
    def setUp(self):
        self.instances = []
        self.tmp = tempfile.TemporaryDirectory()
        Path(self.tmp.name, "faulty.py").write_text(FAULTY_MODULE)

    def tearDown(self):
        for inst in self.instances:
            if inst.proc.poll() is None:
                inst.proc.kill()
            inst.close()
        self.tmp.cleanup()

    def start(self, module="handler", cwd=PYECHO):
        inst = Instance(module, cwd)
        self.instances.append(inst)
        return inst

    def start_ready(self, module="handler", cwd=PYECHO):
        inst = self.start(module, cwd)
        self.assertEqual(inst.read_frame(), (READY, b"python"))
        return inst

    def test_sends_ready_naming_python_first(self):
        inst = self.start_ready()
        code, _, rest = inst.close()
        self.assertEqual(code, 0)
        self.assertEqual(rest, b"")

    def test_pyecho_round_trip_keeps_body_and_content_type(self):
        inst = self.start_ready()
        body = bytes(range(256)) * 10
        status, headers, got = inst.invoke(
            path="/x", headers=[("content-type", "application/octet-stream")], body=body
        )
        self.assertEqual(status, 200)
        self.assertEqual(got, body)
        self.assertEqual(headers, [("Content-Type", "application/octet-stream")])
        # A second invocation on the same instance works too.
        self.assertEqual(inst.invoke(body=b"again")[2], b"again")
        self.assertEqual(inst.close()[0], 0)

    def test_handler_exception_gives_500_and_the_instance_lives_on(self):
        inst = self.start_ready("faulty", self.tmp.name)
        status, headers, body = inst.invoke(path="/boom")
        self.assertEqual(status, 500)
        self.assertIn(("Content-Type", "application/json"), headers)
        self.assertEqual(json.loads(body), {"error": "ValueError: nope"})
        self.assertEqual(inst.invoke(path="/", body=b"still here")[2], b"still here")
        code, err, _ = inst.close()
        self.assertEqual(code, 0)
        self.assertIn("Traceback", err)
        self.assertIn("this goes to stderr", err)

    def test_result_kinds_map_to_responses(self):
        inst = self.start_ready("faulty", self.tmp.name)
        status, headers, body = inst.invoke(method="GET", path="/json", query="a=1&b=x%20y&a=2")
        self.assertEqual(status, 200)
        self.assertIn(("Content-Type", "application/json"), headers)
        self.assertEqual(json.loads(body), {"args": {"a": "1", "b": "x y"}, "method": "GET"})
        status, headers, body = inst.invoke(path="/text")
        self.assertEqual((status, body), (200, b"hello"))
        self.assertIn(("Content-Type", "text/plain; charset=utf-8"), headers)
        self.assertEqual(
            inst.invoke(path="/status"), (418, [("X-A", "1"), ("X-B", "2")], b"teapot")
        )
        self.assertEqual(inst.invoke(path="/badstatus")[0], 500)
        self.assertEqual(inst.invoke(path="/badtype")[0], 500)
        self.assertEqual(inst.close()[0], 0)

    def test_garbage_input_makes_it_exit_non_zero(self):
        inst = self.start_ready()
        inst.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        code, err, rest = inst.close()
        self.assertNotEqual(code, 0)
        self.assertIn("protocol error", err)
        self.assertEqual(rest, b"")

    def test_truncated_or_malformed_frames_make_it_exit_non_zero(self):
        cases = {
            "cut header": frame(REQUEST, b"")[:7],
            "cut payload": request(body=b"hello")[:-2],
            "trailing bytes": frame(REQUEST, request()[12:] + b"x"),
            "reserved bits": MAGIC + struct.pack("<BBHI", REQUEST, 1, 0, 0),
            "unknown type": frame(9),
            "too large": MAGIC + struct.pack("<BBHI", REQUEST, 0, 0, 16 * 1024 * 1024 + 1),
            "wrong direction": frame(RESPONSE, b""),
            "too many headers": request(headers=[("a", "b")] * 129),
        }
        for name, data in cases.items():
            with self.subTest(name):
                inst = self.start_ready()
                inst.send(data)
                code, _, _ = inst.close()
                self.assertEqual(code, 2)

    def test_shutdown_frame_makes_it_exit_zero(self):
        inst = self.start_ready()
        inst.send(frame(SHUTDOWN))
        self.assertEqual(inst.proc.wait(timeout=TIMEOUT_S), 0)

    def test_sigterm_makes_it_exit_zero(self):
        inst = self.start_ready()
        inst.proc.send_signal(signal.SIGTERM)
        self.assertEqual(inst.proc.wait(timeout=TIMEOUT_S), 0)

    def test_missing_module_exits_one_without_ready(self):
        inst = self.start("no_such_module", self.tmp.name)
        code, err, rest = inst.close()
        self.assertEqual(code, 1)
        self.assertEqual(rest, b"")
        self.assertIn("no_such_module", err)


if __name__ == "__main__":
    unittest.main()
