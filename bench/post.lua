-- wrk script of the throughput and latency benchmarks: the same small POST goes to the
-- echo function and to the nginx reference, so both parse a request with a body.
wrk.method = "POST"
wrk.body = "hello, faasvisor"
wrk.headers["Content-Type"] = "text/plain"
