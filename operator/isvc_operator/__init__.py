"""The InferenceService operator: serving.kubeflow.org/v1beta1 InferenceServices into Knative Services.

`kopf run -m isvc_operator` imports this package, which registers the handlers (handlers.py). The logic
is in pure modules (render, status, config, traffic) that tests call with plain dicts.
"""

from . import handlers  # noqa: F401

__version__ = "0.1.0"
