"""reqinfo: answers with what the function received, as JSON (method, path, query, headers
in wire order, body length and the function's environment markers). Query ?set=NAME:VALUE
(repeatable) adds response headers, so tests can check what the node lets through."""

import json
import os
import urllib.parse


def handle(req):
    headers = []
    for pair in urllib.parse.parse_qsl(req.query, keep_blank_values=True):
        if pair[0] == "set":
            name, _, value = pair[1].partition(":")
            headers.append((name, value))
    info = {
        "method": req.method,
        "path": req.path,
        "query": req.query,
        "headers": [[k, v] for k, v in req.headers],
        "body_len": len(req.body),
        "function": os.environ.get("FAASVISOR_FUNCTION"),
        "instance": os.environ.get("FAASVISOR_INSTANCE"),
        "greeting": os.environ.get("GREETING"),
    }
    headers.append(("Content-Type", "application/json"))
    return 200, headers, json.dumps(info)
