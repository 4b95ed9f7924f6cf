"""A handler whose initialize takes a few seconds (readiness must stay false meanwhile)."""

import time

from isvc_runtime.handlers.tensor import TensorHandler


class SlowInitHandler(TensorHandler):
    def initialize(self, context):
        time.sleep(4)
        super().initialize(context)
