"""A handler that takes its time: initialize sleeps (readiness must stay false meanwhile) and a row
holding 999 makes its batch run for two seconds (health checks must still answer)."""

import os
import time

from isvc_runtime.handlers.tensor import TensorHandler


class SlowHandler(TensorHandler):
    def initialize(self, context):
        time.sleep(float(os.environ.get("SLOW_INIT_SECONDS", "4")))
        super().initialize(context)

    def inference(self, data, *args, **kwargs):
        if (data == 999).any():
            time.sleep(2)
        return super().inference(data, *args, **kwargs)
