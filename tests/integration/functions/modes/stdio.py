"""A classic-watchdog function: one run per request, the body on stdin, the answer on stdout.
It answers the body and the Http_* variables it was given as JSON; ?exit=N exits with N
after writing, ?stderr=TEXT writes TEXT to stderr."""
import json
import os
import sys
import urllib.parse

body = sys.stdin.buffer.read()
query = dict(urllib.parse.parse_qsl(os.environ.get("Http_Query", "")))
if "stderr" in query:
    sys.stderr.write(query["stderr"] + "\n")
if "raw" in query:
    sys.stdout.buffer.write(body)
else:
    env = {k: v for k, v in os.environ.items() if k.startswith("Http_")}
    sys.stdout.write(json.dumps({"body": body.decode("utf-8", "replace"), "env": env, "pid": os.getpid()}))
sys.stdout.flush()
sys.exit(int(query.get("exit", "0")))
