"""The C function SDK and the example/test functions, driven over the instance protocol
without the node: python3 tests/unit/test_function_sdk.py BUILD_DIR. Prints PASS/FAIL
lines and ends with "N passed, N failed"."""
import hashlib, json, os, signal, struct, subprocess, sys, tempfile, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_python_runtime import frame, request, decode_response, READY, RESPONSE, SHUTDOWN

B = os.path.abspath(sys.argv[1])
ERR = os.path.join(tempfile.mkdtemp(prefix="fv-sdk-"), "stderr.txt")

class Inst:
    def __init__(self, path, env=None):
        e = dict(os.environ); e.update(env or {})
        self.p = subprocess.Popen([path], cwd=os.path.dirname(path), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=open(ERR, "w+b"), env=e)
    def rd(self, n):
        d = b""
        while len(d) < n:
            c = self.p.stdout.read(n - len(d))
            if not c: break
            d += c
        return d
    def frame(self):
        h = self.rd(12)
        if len(h) < 12: return None, h
        t, f, r, n = struct.unpack("<BBHI", h[4:])
        assert h[:4] == b"FVP1" and f == 0 and r == 0, h
        return t, self.rd(n)
    def send(self, d):
        self.p.stdin.write(d); self.p.stdin.flush()
    def invoke(self, **kw):
        self.send(request(**kw)); t, pl = self.frame(); assert t == RESPONSE, (t, pl)
        return decode_response(pl)
    def close(self):
        self.p.stdin.close(); rest = self.p.stdout.read(); code = self.p.wait(10)
        err = open(ERR, "rb").read()
        return code, rest, err

def ok(c, msg):
    print(("PASS " if c else "FAIL ") + msg)
    if c: ok.passed += 1
    else: ok.failed += 1
ok.passed = 0
ok.failed = 0

# echo
i = Inst(f"{B}/examples/echo/echo")
ok(i.frame() == (READY, b"c"), "echo READY c")
body = bytes(range(256)) * 4000
r = i.invoke(path="/", headers=[("content-TYPE", "image/png"), ("X", "y")], body=body)
ok(r == (200, [("Content-Type", "image/png")], body), "echo round trip 1 MB with content-type")
ok(i.invoke(body=b"") == (200, [], b""), "echo empty")
big = os.urandom(16 * 1024 * 1024 - 200)
ok(i.invoke(body=big)[2] == big, "echo ~16MiB")
code, rest, err = i.close(); ok(code == 0 and rest == b"", f"echo EOF exit 0 ({code})")

# hash
i = Inst(f"{B}/examples/hash/hash")
ok(i.frame() == (READY, b"c"), "hash READY")
def ref(b, n):
    d = hashlib.sha256(b).digest()
    for _ in range(n - 1): d = hashlib.sha256(d).digest()
    return d.hex().encode() + b"\n"
for q, n in [("", 1000), ("rounds=1", 1), ("x=1&rounds=5000", 5000), ("rounds=100000", 100000)]:
    st, h, b = i.invoke(query=q, body=b"hello world")
    ok(st == 200 and b == ref(b"hello world", n), f"hash {q!r}")
for q in ["rounds=0", "rounds=", "rounds=abc", "rounds=10000001", "rounds=-1", "rounds=99999999999"]:
    st, h, b = i.invoke(query=q)
    ok(st == 400 and "error" in json.loads(b), f"hash bad {q!r} -> 400")
t = time.time(); st, h, b = i.invoke(query="rounds=10000000"); dt = time.time() - t
ok(st == 200 and len(b) == 65, f"hash max rounds in {dt:.2f}s")
i.send(frame(SHUTDOWN)); ok(i.p.wait(5) == 0, "hash SHUTDOWN exit 0"); i.close()

# protocol errors on C side
for name, data in {"garbage": b"GET / HTTP/1.1\r\n\r\n", "cut": request(body=b"abc")[:-1],
                   "trailing": frame(2, request()[12:] + b"z"),
                   "too large": b"FVP1" + struct.pack("<BBHI", 2, 0, 0, (16 << 20) + 1),
                   "wrong type": frame(RESPONSE, b""), "ready": frame(READY, b"x"),
                   "too many headers": request(headers=[("a", "b")] * 129)}.items():
    i = Inst(f"{B}/examples/echo/echo"); i.frame(); i.send(data)
    code, rest, err = i.close()
    ok(code == 2 and b"protocol error" in err and rest == b"", f"echo {name} -> exit 2 ({err.strip()[:80]!r})")
i = Inst(f"{B}/examples/echo/echo"); i.frame(); i.p.send_signal(signal.SIGTERM)
ok(i.p.wait(5) == 0, "echo SIGTERM exit 0"); i.close()

# misbehave
M = f"{B}/tests/functions/misbehave"
i = Inst(M)
ok(i.frame() == (READY, b"c"), "misbehave READY")
ok(i.invoke(body=b"x") == (200, [], b"x"), "mode default")
ok(i.invoke(query="mode=ok", body=b"x") == (200, [], b"x"), "mode ok")
ok(i.invoke(query="mode=headers", body=b"x") == (200, [("X-Test", "yes")], b"x"), "mode headers")
ok(i.invoke(query="mode=status&code=503")[0] == 503, "status 503")
t = time.time(); r = i.invoke(query="mode=slow&ms=300", body=b"s"); dt = time.time() - t
ok(r[2] == b"s" and 0.28 < dt < 1.0, f"slow 300ms took {dt:.3f}")
r = i.invoke(query="mode=stderr", body=b"e"); ok(r[2] == b"e", "stderr mode echo (reads stderr after)")
ok(i.invoke(query="mode=nope")[0] == 400, "unknown mode 400")
code, rest, err = i.close(); ok(code == 0 and err.count(b"\n") == 10000, "stderr lines %d" % err.count(b"\n"))

def one(q, env=None, wait=0.5):
    i = Inst(M, env); t, p = i.frame()
    if t is None: return i, None
    i.send(request(query=q)); time.sleep(wait); return i, i.p.poll()
i, rc = one("mode=crash"); ok(rc == -signal.SIGABRT, f"crash rc {rc}"); i.close()
i, rc = one("mode=exit"); ok(rc == 3, f"exit rc {rc}"); i.close()
i, rc = one("mode=hang"); ok(rc is None, "hang alive"); i.p.send_signal(signal.SIGTERM); ok(i.p.wait(5) == 0, "hang SIGTERM -> 0"); i.close()
i, rc = one("mode=garbage"); d = i.p.stdout.read1(100); ok(len(d) == 64 and d[:4] != b"FVP1" and rc is None, f"garbage {len(d)}"); i.p.kill(); i.close()
i, rc = one("mode=oversize"); d = i.rd(12); ok(struct.unpack("<BBHI", d[4:]) == (3, 0, 0, 1 << 30) and rc is None, "oversize header"); i.p.kill(); i.close()
i, rc = one("mode=status&code=700"); t, p = i.frame(); ok(t == 3 and struct.unpack_from("<H", p)[0] == 700, "raw status 700"); i.p.kill(); i.close()
i = Inst(M, {"FV_TEST_CRASH_AT_START": "1"}); code, rest, err = i.close(); ok(code == 1 and rest == b"", f"crash at start {code}")
i = Inst(M, {"FV_TEST_NO_READY": "1"}); time.sleep(0.3); ok(i.p.poll() is None, "no ready alive"); i.p.send_signal(signal.SIGTERM); code, rest, err = i.close(); ok(code == 0 and rest == b"", "no ready silent, SIGTERM 0")
# oom under a memory limit via prlimit address space. An AddressSanitizer build reserves
# terabytes of address space at start, so an address-space limit cannot apply to it.
if b"__asan_init" in open(M, "rb").read():
    print("SKIP oom under an address-space limit (ASan build; not counted)")
else:
    i = subprocess.Popen(["prlimit", "--as=200000000", M], cwd=os.path.dirname(M), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    hdr = i.stdout.read(13); i.stdin.write(request(query="mode=oom")); i.stdin.flush(); time.sleep(1.5)
    ok(i.poll() is None, "oom keeps allocating/waiting under AS limit"); i.kill(); i.wait()
print(f"{ok.passed} passed, {ok.failed} failed")
sys.exit(1 if ok.failed else 0)
