"""pyecho: the Python twin of examples/echo, run by runtimes/python/faasvisor_runtime.py.

Answers with the request body, keeping its Content-Type."""


def handle(req):
    headers = {}
    content_type = req.header("Content-Type")
    if content_type is not None:
        headers["Content-Type"] = content_type
    return 200, headers, req.body
