"""An HTTP function as of-watchdog's http mode runs it: a server on 127.0.0.1:PORT (argv[1],
default 8080). POST echoes; the answer's headers say what the server saw. /status/N answers
N, /ready answers 503 until READY_AFTER requests to it, /big?n=BYTES answers that many bytes,
/early sends a 103 before its answer, /exit ends the server. START_DELAY (seconds) delays the listen, to test that READY waits."""
import http.server
import os
import sys
import time


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the adapter uses it
    ready_probes = 0

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        status = 200
        if path.startswith("/status/"):
            status = int(path[len("/status/"):])
        elif path == "/ready":
            Handler.ready_probes += 1
            status = 200 if Handler.ready_probes > int(os.environ.get("READY_AFTER", "0")) else 503
        elif path == "/big":
            body = b"x" * int(query.split("=", 1)[1])
        elif path == "/exit":
            os._exit(3)
        elif path == "/early":  # an interim answer first (103 Early Hints), then the real one
            self.send_response_only(103)
            self.send_header("Link", "</style.css>; rel=preload")
            self.end_headers()
        self.send_response(status)
        self.send_header("Content-Type", self.headers.get("Content-Type") or "application/octet-stream")
        self.send_header("X-Seen-Method", self.command)
        self.send_header("X-Seen-Path", path)
        self.send_header("X-Seen-Query", query)
        self.send_header("X-Seen-Call-Id", self.headers.get("X-Call-Id") or "")
        self.send_header("X-Seen-Host", self.headers.get("Host") or "")
        self.send_header("X-Ready-Probes", str(Handler.ready_probes))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = answer

    def log_message(self, fmt, *args):
        sys.stderr.write("server: " + (fmt % args) + "\n")


time.sleep(float(os.environ.get("START_DELAY", "0")))
port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
print("server: listening on", port, flush=True)
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
