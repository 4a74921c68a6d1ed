"""HTTP/1.1 front end: limits, malformed input, chunked bodies, pipelining, keep-alive,
idle timeouts, the connection limit and method checks."""

import time

from harness import DaemonTestCase, MISBEHAVE_IMAGE, RawReader, open_sockets, raw_request, scaled, wait_until

MAX_BODY = 64 * 1024
MAX_HEADER = 4096
IDLE_MS = int(scaled(1500))


class HttpTests(DaemonTestCase):
    FLAGS = ("--max-body-bytes", str(MAX_BODY), "--max-header-bytes", str(MAX_HEADER),
             "--idle-timeout-ms", str(IDLE_MS), "--stem-pool", "4")

    @classmethod
    def prepare_daemon(cls):
        cls.daemon.deploy("echo")
        cls.daemon.deploy("slow", image=MISBEHAVE_IMAGE, process="./misbehave", timeout="60s")
        # No queue: with no warm instance an invocation is refused inside Pool::invoke.
        cls.daemon.deploy("unqueued", max_instances=1, queue=0)

    def exchange(self, data, timeout=None):
        """Sends raw bytes on a fresh connection and reads one response."""
        s = self.daemon.raw_socket(timeout)
        try:
            s.sendall(data)
            return RawReader(s).read_response()
        finally:
            s.close()

    def test_oversized_body_413(self):
        r = self.daemon.invoke("echo", b"x" * (MAX_BODY + 1))
        self.assertJsonError(r, 413)
        # A body at the limit is fine.
        ok = self.daemon.invoke("echo", b"y" * MAX_BODY)
        self.assertEqual(ok.status, 200, ok)
        self.assertEqual(len(ok.body), MAX_BODY)

    def test_oversized_body_413_declared_only(self):
        # The node refuses on the declared length without waiting for the body.
        s = self.daemon.raw_socket()
        try:
            s.sendall(b"POST /function/echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                      % (MAX_BODY * 100))
            r = RawReader(s).read_response()
            self.assertJsonError(r, 413)
        finally:
            s.close()

    def test_oversized_chunked_body_413(self):
        chunk = b"z" * 8192
        data = b"POST /function/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        data += (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * (MAX_BODY // len(chunk) + 2)
        data += b"0\r\n\r\n"
        s = self.daemon.raw_socket()
        try:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the node may hang up before reading everything
            r = RawReader(s).read_response()
            self.assertJsonError(r, 413)
        finally:
            s.close()

    def test_big_headers_431(self):
        r = self.daemon.invoke("echo", b"x", headers={"X-Big": "a" * (MAX_HEADER + 10)})
        self.assertJsonError(r, 431)
        many = {"X-H%d" % i: "v" * 30 for i in range(MAX_HEADER // 40 + 5)}
        r = self.daemon.invoke("echo", b"x", headers=many)
        self.assertJsonError(r, 431)

    def test_malformed_request_400(self):
        for junk in (b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9.9\r\n\r\n",
                     b"POST /function/echo HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
                     b"GET /healthz HTTP/1.1\r\nBad Header Line\r\n\r\n"):
            with self.subTest(junk=junk):
                s = self.daemon.raw_socket()
                try:
                    s.sendall(junk)
                    reader = RawReader(s)
                    r = reader.read_response()
                    self.assertIn(r.status, (400, 505), r)
                    self.assertEqual(r.header("Content-Type"), "application/json")
                    self.assertIn("error", r.json())
                    self.assertEqual(r.header("Connection"), "close", r)
                    self.assertTrue(reader.at_eof(scaled(5)), "connection left open after 400")
                finally:
                    s.close()
        self.assertTrue(self.daemon.healthy())

    def test_ambiguous_framing_rejected(self):
        # Request smuggling shapes: both framings, or two different lengths.
        cases = [
            b"POST /function/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"POST /function/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
            b"Content-Length: 6\r\n\r\nhello!",
            b"POST /function/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n",
        ]
        for data in cases:
            with self.subTest(data=data[:90]):
                s = self.daemon.raw_socket()
                try:
                    s.sendall(data)
                    reader = RawReader(s)
                    r = reader.read_response()
                    self.assertIn(r.status, (400, 501), r)
                    self.assertIn("error", r.json())
                    self.assertTrue(reader.at_eof(scaled(5)), "connection left open")
                finally:
                    s.close()
        self.assertTrue(self.daemon.healthy())

    def test_expect_continue_refused_when_too_large(self):
        s = self.daemon.raw_socket()
        try:
            s.sendall(b"POST /function/echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
                      b"Expect: 100-continue\r\n\r\n" % (MAX_BODY + 1))
            r = RawReader(s).read_response()
            self.assertJsonError(r, 413)  # and no "100 Continue" first
        finally:
            s.close()

    def test_chunked_body(self):
        body = b"4\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n"
        data = (b"POST /function/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: text/plain\r\n\r\n" + body)
        r = self.exchange(data)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"Wikipedia in\r\n\r\nchunks.")

    def test_chunked_body_in_pieces(self):
        # Chunk framing split across TCP writes, with a chunk extension and a trailer.
        s = self.daemon.raw_socket()
        try:
            pieces = [b"POST /function/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
                      b"3;ext=1\r\nab", b"c\r\n", b"2\r\nde\r\n0\r\n", b"X-Trailer: t\r\n\r\n"]
            for p in pieces:
                s.sendall(p)
                time.sleep(0.01)  # pacing only, so the pieces arrive as separate reads
            r = RawReader(s).read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, b"abcde")
        finally:
            s.close()

    def test_pipelining_three_requests_in_one_write(self):
        data = (raw_request("POST", "/function/echo", b"first")
                + raw_request("GET", "/healthz")
                + raw_request("POST", "/function/echo", b"third"))
        s = self.daemon.raw_socket()
        try:
            s.sendall(data)
            reader = RawReader(s)
            r1, r2, r3 = reader.read_response(), reader.read_response(), reader.read_response()
            self.assertEqual((r1.status, r1.body), (200, b"first"))
            self.assertEqual(r2.status, 200)
            self.assertEqual(r2.json(), {"status": "ok"})
            self.assertEqual((r3.status, r3.body), (200, b"third"))
            # Still usable afterwards.
            s.sendall(raw_request("POST", "/function/echo", b"fourth"))
            self.assertEqual(reader.read_response().body, b"fourth")
        finally:
            s.close()

    def test_pipelined_invocations_refused_at_once_are_answered_in_order(self):
        # Each 'unqueued' invocation is refused (429) inside Pool::invoke; its result waits
        # in the pool's completed queue and is delivered after the CQ batch, which then goes
        # on with the next pipelined request (the connection has no re-entrancy latch).
        data = (raw_request("POST", "/function/unqueued", b"1")
                + raw_request("POST", "/function/unqueued", b"2")
                + raw_request("GET", "/healthz")
                + raw_request("POST", "/function/unqueued", b"3")
                + raw_request("POST", "/function/echo", b"last"))
        s = self.daemon.raw_socket()
        try:
            s.sendall(data)
            reader = RawReader(s)
            got = [reader.read_response() for _ in range(5)]
            self.assertEqual([g.status for g in got], [429, 429, 200, 429, 200], got)
            self.assertIn("queue limit 0", got[0].json()["error"])
            self.assertEqual(got[2].json(), {"status": "ok"})
            self.assertEqual(got[4].body, b"last")
            s.sendall(raw_request("POST", "/function/echo", b"again"))
            self.assertEqual(reader.read_response().body, b"again")
        finally:
            s.close()

    def test_pipelined_error_then_valid(self):
        # A 404 in the middle must not disturb the order or the connection.
        data = (raw_request("POST", "/function/echo", b"a")
                + raw_request("POST", "/function/missing", b"b")
                + raw_request("POST", "/function/echo", b"c"))
        s = self.daemon.raw_socket()
        try:
            s.sendall(data)
            reader = RawReader(s)
            got = [reader.read_response() for _ in range(3)]
            self.assertEqual([g.status for g in got], [200, 404, 200])
            self.assertEqual(got[0].body, b"a")
            self.assertEqual(got[2].body, b"c")
        finally:
            s.close()

    def test_keep_alive_reuse(self):
        s = self.daemon.raw_socket()
        try:
            reader = RawReader(s)
            port = s.getsockname()[1]
            for i in range(5):
                s.sendall(raw_request("POST", "/function/echo", b"ka %d" % i))
                r = reader.read_response()
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.body, b"ka %d" % i)
                self.assertNotEqual(r.header("Connection"), "close")
            self.assertEqual(s.getsockname()[1], port)
            # http.client reuses its connection too.
            conn = self.daemon.connect()
            try:
                for i in range(3):
                    r = self.daemon.invoke("echo", b"hc %d" % i, conn=conn)
                    self.assertEqual(r.body, b"hc %d" % i)
                    if i == 0:
                        sock = conn.sock
                    self.assertIs(conn.sock, sock, "http.client had to reconnect")
            finally:
                conn.close()
            # Connection: close is honoured.
            s.sendall(raw_request("GET", "/healthz", keep_alive=False))
            r = reader.read_response()
            self.assertEqual(r.header("Connection"), "close")
            self.assertTrue(reader.at_eof(scaled(5)))
        finally:
            s.close()

    def test_http10_closes(self):
        s = self.daemon.raw_socket()
        try:
            s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            reader = RawReader(s)
            r = reader.read_response()
            self.assertEqual(r.status, 200)
            self.assertTrue(reader.at_eof(scaled(5)))
        finally:
            s.close()

    def test_idle_timeout_closes(self):
        s = self.daemon.raw_socket()
        try:
            reader = RawReader(s)
            s.sendall(raw_request("GET", "/healthz"))
            self.assertEqual(reader.read_response().status, 200)
            t0 = time.monotonic()
            self.assertTrue(reader.at_eof(IDLE_MS / 1000 + scaled(5)),
                            "idle keep-alive connection not closed")
            waited = time.monotonic() - t0
            self.assertGreater(waited, IDLE_MS / 1000 * 0.5, "closed long before the idle timeout")
        finally:
            s.close()

    def test_invocation_longer_than_idle_timeout(self):
        # The idle timeout is for idle connections: a running invocation is not cut off, and
        # the idle period starts again when the response has been sent. Timeline (idle = I):
        # the invocation takes 1.25 I, then the client thinks for 0.85 I (< I) and asks again.
        s = self.daemon.raw_socket(timeout=scaled(60))
        try:
            s.sendall(raw_request("POST", "/function/slow?mode=slow&ms=%d" % (IDLE_MS * 5 // 4),
                                  b"late"))
            reader = RawReader(s)
            r = reader.read_response()
            self.assertEqual((r.status, r.body), (200, b"late"), r)
            time.sleep(IDLE_MS * 0.85 / 1000)  # the client's think time is what is tested
            s.sendall(raw_request("GET", "/healthz"))
            try:
                r = reader.read_response()
            except (EOFError, ConnectionResetError):
                self.fail("connection closed %.0f ms after a response although the idle timeout "
                          "is %d ms" % (IDLE_MS * 0.85, IDLE_MS))
            self.assertEqual(r.status, 200)
        finally:
            s.close()

    def test_half_sent_request_408(self):
        s = self.daemon.raw_socket()
        try:
            s.sendall(b"POST /function/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly part")
            reader = RawReader(s)
            s.settimeout(IDLE_MS / 1000 + scaled(5))
            r = reader.read_response()
            self.assertJsonError(r, 408)
            self.assertEqual(r.header("Connection"), "close")
            self.assertTrue(reader.at_eof(scaled(5)))
        finally:
            s.close()

    def test_half_sent_headers_408(self):
        s = self.daemon.raw_socket()
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Partial: ")
            reader = RawReader(s)
            s.settimeout(IDLE_MS / 1000 + scaled(5))
            r = reader.read_response()
            self.assertJsonError(r, 408)
            self.assertTrue(reader.at_eof(scaled(5)))
        finally:
            s.close()

    def test_405_with_allow(self):
        d = self.daemon
        cases = [("DELETE", "/healthz", {"GET", "HEAD"}),
                 ("POST", "/system/info", {"GET"}),
                 ("PATCH", "/system/functions", {"GET", "POST", "PUT", "DELETE"}),
                 ("GET", "/system/scale-function/echo", {"POST"}),
                 ("PUT", "/system/stats", {"GET", "DELETE"}),
                 ("POST", "/system/function/echo", {"GET"})]
        for method, path, allow in cases:
            with self.subTest(method=method, path=path):
                r = d.request(method, path, b"{}")
                self.assertJsonError(r, 405)
                got = {m.strip() for m in (r.header("Allow") or "").split(",") if m.strip()}
                self.assertEqual(got, allow, r)

    def test_head_healthz(self):
        s = self.daemon.raw_socket()
        try:
            s.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            s.settimeout(scaled(5))
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            self.assertTrue(data.startswith(b"HTTP/1.1 200"), data)
        finally:
            s.close()

    def test_unknown_endpoint_404(self):
        for path in ("/", "/nope", "/system/nope", "/function/", "/system/function/"):
            with self.subTest(path=path):
                self.assertJsonError(self.daemon.get(path), 404)

    def test_expect_100_continue(self):
        s = self.daemon.raw_socket()
        try:
            s.sendall(b"POST /function/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                      b"Expect: 100-continue\r\n\r\n")
            reader = RawReader(s)
            interim = reader.read_response()
            self.assertEqual(interim.status, 100)
            s.sendall(b"hello")
            r = reader.read_response()
            self.assertEqual((r.status, r.body), (200, b"hello"))
        finally:
            s.close()

    def test_client_disconnect_mid_invocation(self):
        # The node must survive a client that leaves while its invocation runs.
        s = self.daemon.raw_socket()
        s.sendall(raw_request("POST", "/function/echo", b"bye" * 1000))
        s.close()
        wait_until(self.daemon.healthy, scaled(5), "the node to stay healthy")
        self.assertEqual(self.daemon.invoke("echo", b"after").body, b"after")


MAX_CONN = 4


class ConnectionLimitTests(DaemonTestCase):
    FLAGS = ("--max-connections", str(MAX_CONN), "--stem-pool", "2")

    def wait_no_client_connections(self):
        # Only the listening socket left in the daemon (our earlier connections are closed).
        wait_until(lambda: self.daemon.get("/system/info").json()["faasvisor"]["connections"] <= 1,
                   scaled(10), "earlier connections to close")
        wait_until(lambda: open_sockets(self.daemon.pid) == 1, scaled(10),
                   "the daemon to hold only its listening socket")

    def test_connection_limit_503(self):
        self.wait_no_client_connections()
        held = []
        try:
            for i in range(MAX_CONN):
                s = self.daemon.raw_socket()
                held.append(s)
                s.sendall(raw_request("GET", "/healthz"))
                r = RawReader(s).read_response()
                self.assertEqual(r.status, 200, "connection %d: %r" % (i, r))
            extra = self.daemon.raw_socket()
            held.append(extra)
            reader = RawReader(extra)
            r = reader.read_response()  # sent without being asked: we must not write first
            self.assertJsonError(r, 503, "connection limit")
            self.assertEqual(r.header("Connection"), "close")
            self.assertTrue(r.header("Retry-After"))
            self.assertTrue(reader.at_eof(scaled(5)))
            # The held connections still work.
            held[0].sendall(raw_request("GET", "/healthz"))
            self.assertEqual(RawReader(held[0]).read_response().status, 200)
        finally:
            for s in held:
                s.close()
        # Room again once they are gone.
        wait_until(lambda: self._healthz_ok(), scaled(10), "a connection slot to free up")

    def _healthz_ok(self):
        try:
            return self.daemon.healthy()
        except (OSError, ValueError):
            return False

    def test_many_sequential_connections(self):
        # Connections are released: far more than the limit, one after another.
        for i in range(MAX_CONN * 10):
            s = self.daemon.raw_socket()
            try:
                s.sendall(raw_request("GET", "/healthz", keep_alive=False))
                try:
                    r = RawReader(s).read_response()
                except (EOFError, ConnectionResetError):
                    r = None
                if r is not None and r.status == 503:
                    # The previous connection may not have been reaped yet: allow a retry.
                    continue
                self.assertIsNotNone(r)
                self.assertEqual(r.status, 200)
            finally:
                s.close()
        self.assertTrue(self._healthz_ok())
