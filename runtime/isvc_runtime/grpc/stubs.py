"""The one place the Open Inference Protocol's gRPC messages and stubs, and gRPC health's, are imported.

Messages and stubs come from ``open-inference-grpc`` (PyPI, Apache-2.0): the code generated from the Open
Inference Protocol working group's own ``open_inference_grpc.proto`` (package ``inference``, the file KServe
ships as ``grpc_predict_v2.proto`` and Triton extends in ``grpc_service.proto``), published by that group
(github.com/open-inference/python-clients). It needs only ``grpcio`` and ``protobuf`` and loads with the
protobuf the runtime already has. Not chosen:

- ``kserve``: pins ``protobuf<7``, ``grpcio-tools``, ``fastapi``, ``pandas``... (kserve 0.21.0's metadata);
- ``tritonclient[grpc]``: its ``service_pb2`` is Triton's superset of the protocol, but the package
  requires ``protobuf<7``, ``python-rapidjson``, ``ml-dtypes`` and ``urllib3`` (tritonclient 2.73.0), and
  ``grpcio-health-checking`` 1.85 (for ``grpc.health.v1``) requires ``protobuf>=7.35``.

Health (``grpc.health.v1.Health``, what Kubernetes' and Knative's ``grpc`` probes call) comes from
``grpcio-health-checking``; :data:`AsyncHealthServicer` is its ``grpc.aio`` servicer.

The generated descriptors register the proto package ``inference`` in protobuf's default pool: a process
that imports these must not also import KServe's or Triton's generated modules (same message names,
another file). The clients that prove compatibility run in their own environment (tests/kserve_compat).
"""

from __future__ import annotations

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer as AsyncHealthServicer
from open_inference.grpc import protocol as pb
from open_inference.grpc.service import (
    GRPCInferenceServiceServicer,
    GRPCInferenceServiceStub,
    add_GRPCInferenceServiceServicer_to_server,
)

SERVICE_NAME = "inference.GRPCInferenceService"
HEALTH_SERVICE_NAME = "grpc.health.v1.Health"
# The methods KServe's and Triton's clients call; the server implements each (issue 16).
METHODS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")

__all__ = [
    "HEALTH_SERVICE_NAME",
    "METHODS",
    "SERVICE_NAME",
    "AsyncHealthServicer",
    "GRPCInferenceServiceServicer",
    "GRPCInferenceServiceStub",
    "add_GRPCInferenceServiceServicer_to_server",
    "health_pb2",
    "health_pb2_grpc",
    "pb",
]
