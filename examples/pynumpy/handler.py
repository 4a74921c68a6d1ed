"""pynumpy: a Python function that imports a heavy library (NumPy, Debian's python3-numpy)
at load time, as real functions do, then sums the request's bytes with it. Its cold start
is mostly that import, which a template (docs/templates.md) does once per definition."""

import numpy


def handle(req):
    data = numpy.frombuffer(req.body, dtype=numpy.uint8)
    return {"bytes": int(data.size), "sum": int(data.sum()), "numpy": numpy.__version__}
