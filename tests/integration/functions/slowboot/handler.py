"""slowboot: a Python function that takes a while to become ready (FV_BOOT_DELAY_MS, default
1000, slept at import time, before the runtime sends READY), then echoes the body.

Used by the integration tests to hold an instance in the booting state deterministically."""

import os
import time

time.sleep(int(os.environ.get("FV_BOOT_DELAY_MS", "1000")) / 1000)


def handle(req):
    return 200, {}, req.body
