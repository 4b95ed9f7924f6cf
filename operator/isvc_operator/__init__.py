"""The InferenceService operator: serving.kubeflow.org/v1beta1 InferenceServices into Knative Services.

`kopf run -m isvc_operator` imports this package, which registers the handlers (handlers.py): kopf's
indexes of what the operator follows and the watch events that run `reconcile` (reconcile.py), which reads
what is known (known.py) and writes through the narrow `Kube` protocol (kube.py). The logic is in pure
modules (render, status, config, traffic, ingress, credentials) that tests call with plain dicts.
"""

from . import handlers  # noqa: F401

__version__ = "0.1.0"
