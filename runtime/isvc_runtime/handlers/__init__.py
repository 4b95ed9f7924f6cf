"""Built-in handlers with TorchServe's contract (``initialize(context)``, ``handle(data, context)``).

Manifest handler names that resolve here: ``base_handler``, ``image_classifier``, ``tensor_handler``.
"""

BUILTIN_HANDLERS = {
    "base_handler": "isvc_runtime.handlers.base:BaseHandler",
    "image_classifier": "isvc_runtime.handlers.image_classifier:ImageClassifier",
    "vision_handler": "isvc_runtime.handlers.image_classifier:VisionHandler",
    "tensor_handler": "isvc_runtime.handlers.tensor:TensorHandler",
}
