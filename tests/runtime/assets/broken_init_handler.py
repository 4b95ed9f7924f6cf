"""A handler that cannot initialize: the model must be reported failed, the server must stay up."""

from isvc_runtime.handlers.tensor import TensorHandler


class BrokenInitHandler(TensorHandler):
    def initialize(self, context):
        raise RuntimeError("weights are corrupt")
