"""``PROTOCOL_VERSION``: the protocol of the one port the pod is routed and probed on.

Both the operator (pod.runtime_env) and KServe (``SetTorchServeDefaults`` in kserve/kserve
``pkg/apis/serving/v1beta1/inference_service_defaults.go``, for runtimes of the torchserve server type) set
it to the isvc's ``protocolVersion``. TorchServe's own KServe wrapper read it to choose the protocol it
spoke (pytorch/serve ``kubernetes/kserve/kserve_wrapper/__main__.py``: ``PROTOCOL_VERSION``, default
``v1``). This runtime serves every protocol on its own routes whatever it says; what it decides:

- ``GET /``, KServe's v1 server liveness (``{"status": "alive"}``, KServe's REST server and KFServing's
  ``LivenessHandler``), answers in the declared protocol: v1's body for ``v1``, the Open Inference
  Protocol's server liveness (``{"live": true}``, what ``/v2/health/live`` answers) for ``v2`` and
  ``grpc-v2``.
- ``grpc-v2``: the gRPC server is the pod's routed and probed port, so a gRPC port that cannot be bound
  stops the start-up (for v1 and v2 an unrequested default gRPC port that is taken is only logged).

Unset, empty, or ``<no value>`` (what KServe's placeholder substitution leaves for a missing value): ``v1``,
KServe's default. Anything else stops the start-up with a message naming the variable.
"""

from __future__ import annotations

from collections.abc import Mapping

from .config import template_value
from .errors import ConfigError

ENV = "PROTOCOL_VERSION"
V1, V2, GRPC_V2 = "v1", "v2", "grpc-v2"
PROTOCOLS = (V1, V2, GRPC_V2)
DEFAULT = V1


def protocol_version(env: Mapping[str, str]) -> str:
    """The declared protocol; ConfigError for a value that is none of PROTOCOLS."""
    value = template_value(env.get(ENV))
    if value is None:
        return DEFAULT
    if value not in PROTOCOLS:
        raise ConfigError(f"{ENV}: {value!r} is not one of {', '.join(PROTOCOLS)}")
    return value


def liveness_body(protocol: str) -> dict[str, object]:
    """What ``GET /`` answers while the server runs."""
    return {"status": "alive"} if protocol == V1 else {"live": True}
