"""A canary gone wrong, for the monitoring test: every call takes 300 ms and then fails (HTTP 500)."""

import time


def handle(data, context):
    if data is None:  # the load-time call
        return None
    time.sleep(0.3)
    raise RuntimeError("canary regression")
