"""The node's HTTP API, as a user drives it (Python 3 stdlib only)."""

import http.client
import json
import threading
import time
import urllib.parse


class NodeError(Exception):
    pass


class Node:
    def __init__(self, url, timeout_s=30.0):
        parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme != "http" or not parts.hostname:
            raise NodeError("--url wants http://HOST:PORT, not %r" % url)
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout_s = timeout_s

    def connection(self, timeout_s=None):
        return http.client.HTTPConnection(self.host, self.port,
                                          timeout=timeout_s or self.timeout_s)

    def request(self, method, path, body=None, expect=None):
        """(status, parsed JSON or raw bytes). `expect`: statuses that are not an error."""
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        conn = self.connection()
        try:
            conn.request(method, path, body=body,
                         headers={"Content-Type": "application/json"} if body else {})
            r = conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException) as e:
            raise NodeError("%s %s%s: %s" % (method, self.url, path, e)) from e
        finally:
            conn.close()
        try:
            parsed = json.loads(data.decode("utf-8")) if data else None
        except ValueError:
            parsed = data
        if expect is not None and r.status not in expect:
            raise NodeError("%s %s: HTTP %d %s" % (method, path, r.status,
                                                   parsed if parsed is not None else ""))
        return r.status, parsed

    def info(self):
        return self.request("GET", "/system/info", expect=(200,))[1]

    def functions(self):
        return self.request("GET", "/system/functions", expect=(200,))[1]

    def function(self, name):
        status, data = self.request("GET", "/system/function/" + name, expect=(200, 404))
        return data if status == 200 else None

    def instances(self, name):
        fn = self.function(name)
        return [] if fn is None else fn["faasvisor"]["instances"]

    def deploy(self, spec):
        self.request("POST", "/system/functions", spec, expect=(202,))

    def delete(self, name):
        self.request("DELETE", "/system/functions", {"functionName": name}, expect=(202, 404))

    def scale(self, name, replicas):
        return self.request("POST", "/system/scale-function/" + name,
                            {"serviceName": name, "replicas": replicas}, expect=(202,))[1]

    def wait_instances(self, name, done, timeout_s, what):
        """Polls the function's instance list until done(instances) holds."""
        deadline = time.monotonic() + timeout_s
        while True:
            insts = self.instances(name)
            if done(insts):
                return insts
            if time.monotonic() > deadline:
                states = {}
                for i in insts:
                    states[i["state"]] = states.get(i["state"], 0) + 1
                raise NodeError("%s: %s did not happen within %.0f s (instances by state: %s)"
                                % (name, what, timeout_s, states))
            time.sleep(0.02)

    def fire(self, name, count, body, timeout_s):
        """`count` simultaneous invocations, each on its own connection opened beforehand
        (connection set-up is not measured). Returns one dict per invocation."""
        conns = []
        try:
            for _ in range(count):
                c = self.connection(timeout_s)
                c.connect()
                conns.append(c)
        except OSError as e:
            for c in conns:
                c.close()
            raise NodeError("connect to %s: %s" % (self.url, e)) from e
        results = [None] * count
        barrier = threading.Barrier(count + 1)

        def one(i):
            c = conns[i]
            try:
                barrier.wait(timeout_s)
                t0 = time.perf_counter()
                c.request("POST", "/function/" + name, body=body,
                          headers={"Content-Type": "application/octet-stream"})
                r = c.getresponse()
                data = r.read()
                t1 = time.perf_counter()
                results[i] = {"status": r.status, "client_ms": (t1 - t0) * 1e3,
                              "start": r.getheader("X-Faasvisor-Start", ""),
                              "instance": r.getheader("X-Faasvisor-Instance", ""),
                              "duration_s": r.getheader("X-Duration-Seconds"),
                              "body": data}
            except (OSError, http.client.HTTPException, threading.BrokenBarrierError) as e:
                results[i] = {"status": 0, "error": str(e) or type(e).__name__}
            finally:
                c.close()

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(count)]
        for t in threads:
            t.start()
        barrier.wait(timeout_s)
        deadline = time.monotonic() + timeout_s + 5
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for i, r in enumerate(results):
            if r is None:
                results[i] = {"status": 0, "error": "no answer within %.0f s" % timeout_s}
        return results
