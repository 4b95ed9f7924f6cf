"""The InferenceService as typed values, parsed once from the object the apiserver hands over.

The dataclasses follow crds/serving.kubeflow.org_inferenceservices.yaml field by field (camelCase there,
snake_case here) and every default the operator gives an unset field is decided in this module, nowhere
else. The schema and its CEL rules have checked types and ranges at admission; parsing still refuses,
with a `RenderError` naming the field, what would make a broken pod, since a stored object may predate a
rule. Kubernetes objects the CRD passes through untouched (tolerations, affinity, an env var's valueFrom)
stay plain mappings.

`protocolVersion` `grpc-v2` (KServe's name) serves the Open Inference Protocol over gRPC on the one port
Knative routes to: that port is named `h2c` (Knative then speaks HTTP/2 cleartext to it) and defaults to
8081, KServe's gRPC port; the runtime's HTTP server stays on 8080 beside it (`HTTP_PORT`), so a gRPC port
of 8080 is refused, as is an `h2c` port for the HTTP/1.1 protocols v1 and v2.

`batcher` and `logger` (KFServing's) take the fields they leave unset from the operator's ConfigMap
(`BatcherSpec.with_defaults`, `LoggerSpec.with_defaults`); pod.runtime_args turns them into the runtime's
arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import BatcherConfig, LoggerConfig
from .errors import RenderError
from .quantity import parse_quantity

GRPC_PROTOCOL = "grpc-v2"
PROTOCOLS = ("v1", "v2", GRPC_PROTOCOL)
DEFAULT_PROTOCOL = "v1"
#: Knative's port names (knative.dev/serving pkg/apis/serving/k8s_validation.go, validPortNames): h2c makes
#: Knative's queue-proxy and activator speak HTTP/2 cleartext to the container, http1 HTTP/1.1.
H2C, HTTP1 = "h2c", "http1"
DEFAULT_MIN_REPLICAS = 1
#: Every unset request and limit of the runtime container (see `default_resources`).
DEFAULT_RESOURCES = {"cpu": "1", "memory": "2Gi"}
GPU_RESOURCE = "nvidia.com/gpu"
PVC_SCHEME = "pvc://"

LOGGER_MODES = ("all", "request", "response")
DEFAULT_LOGGER_MODE = "all"

_PYTORCH = "spec.predictor.pytorch"


@dataclass(frozen=True)
class ObjectMeta:
    name: str
    namespace: str
    uid: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerPort:
    container_port: int
    name: str | None = None
    protocol: str | None = None

    def manifest(self) -> dict[str, Any]:
        return _set_fields(containerPort=self.container_port, name=self.name, protocol=self.protocol)


DEFAULT_PORT = ContainerPort(8080, HTTP1, "TCP")
#: grpc-v2's port: KServe's default gRPC port (python/kserve/kserve/constants/constants.py DEFAULT_GRPC_PORT).
DEFAULT_GRPC_PORT = ContainerPort(8081, H2C, "TCP")
#: Where the runtime serves HTTP when the routed port is gRPC's (grpc-v2).
HTTP_PORT = DEFAULT_PORT.container_port


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str | None = None
    value_from: dict[str, Any] | None = None

    def manifest(self) -> dict[str, Any]:
        return _set_fields(name=self.name, value=self.value, valueFrom=self.value_from)


@dataclass(frozen=True)
class ResourceRequirements:
    requests: dict[str, Any]
    limits: dict[str, Any]

    def manifest(self) -> dict[str, dict[str, Any]]:
        return {"requests": dict(self.requests), "limits": dict(self.limits)}


@dataclass(frozen=True)
class PersistentVolumeClaimSource:
    """`pvc://claim/some/path`: the claim and the path inside it ("" for its root)."""

    claim_name: str
    path: str = ""


@dataclass(frozen=True)
class PyTorchSpec:
    storage_uri: str
    pvc: PersistentVolumeClaimSource | None = None
    protocol_version: str = DEFAULT_PROTOCOL
    runtime_version: str | None = None
    image: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()
    resources: ResourceRequirements = field(default_factory=lambda: default_resources(None))
    port: ContainerPort = DEFAULT_PORT

    @property
    def requests_gpu(self) -> bool:
        return GPU_RESOURCE in self.resources.limits

    @property
    def grpc(self) -> bool:
        """The routed port serves gRPC (grpc-v2); else it is the runtime's HTTP port."""
        return self.protocol_version == GRPC_PROTOCOL


@dataclass(frozen=True)
class BatcherSpec:
    """KFServing's batcher; None: take the ConfigMap's value (`with_defaults`)."""

    max_batch_size: int | None = None
    max_latency_ms: int | None = None  # [maxLatency]
    timeout_seconds: int | None = None  # [timeout]

    def with_defaults(self, config: BatcherConfig) -> BatcherSpec:
        return BatcherSpec(
            max_batch_size=_first(self.max_batch_size, config.max_batch_size),
            max_latency_ms=_first(self.max_latency_ms, config.max_latency_ms),
            timeout_seconds=_first(self.timeout_seconds, config.timeout_seconds),
        )


@dataclass(frozen=True)
class LoggerSpec:
    """KFServing's payload logger; url None: the ConfigMap's default sink (`with_defaults`)."""

    url: str | None = None
    mode: str = DEFAULT_LOGGER_MODE

    def with_defaults(self, config: LoggerConfig) -> LoggerSpec:
        return LoggerSpec(url=self.url or config.default_url, mode=self.mode)


@dataclass(frozen=True)
class PredictorSpec:
    pytorch: PyTorchSpec
    min_replicas: int = DEFAULT_MIN_REPLICAS
    max_replicas: int = 0  # 0: unbounded
    container_concurrency: int | None = None
    timeout_seconds: int | None = None
    canary_traffic_percent: int | None = None
    service_account_name: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    affinity: dict[str, Any] | None = None
    batcher: BatcherSpec | None = None
    logger: LoggerSpec | None = None


@dataclass(frozen=True)
class InferenceService:
    metadata: ObjectMeta
    predictor: PredictorSpec


def parse_metadata(isvc: dict[str, Any]) -> ObjectMeta:
    metadata = isvc["metadata"]
    return ObjectMeta(
        name=str(metadata["name"]),
        namespace=str(metadata["namespace"]),
        uid=str(metadata["uid"]),
        labels=dict(metadata.get("labels") or {}),
        annotations=dict(metadata.get("annotations") or {}),
    )


def parse_inference_service(isvc: dict[str, Any]) -> InferenceService:
    """The typed InferenceService, defaults applied; RenderError names a field that cannot be served."""
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    min_replicas = predictor.get("minReplicas")
    return InferenceService(
        metadata=parse_metadata(isvc),
        predictor=PredictorSpec(
            pytorch=parse_pytorch(predictor.get("pytorch")),
            min_replicas=DEFAULT_MIN_REPLICAS if min_replicas is None else int(min_replicas),
            max_replicas=int(predictor.get("maxReplicas") or 0),
            container_concurrency=_optional_int(predictor.get("containerConcurrency")),
            timeout_seconds=_optional_int(predictor.get("timeout")),
            canary_traffic_percent=_optional_int(predictor.get("canaryTrafficPercent")),
            service_account_name=predictor.get("serviceAccountName") or None,
            node_selector=dict(predictor.get("nodeSelector") or {}),
            tolerations=tuple(predictor.get("tolerations") or ()),
            affinity=predictor.get("affinity") or None,
            batcher=parse_batcher(predictor.get("batcher")),
            logger=parse_logger(predictor.get("logger")),
        ),
    )


def parse_batcher(batcher: Any) -> BatcherSpec | None:
    """`batcher` as given (None when absent); `{}` turns batching on with the ConfigMap's values."""
    if batcher is None:
        return None
    if not isinstance(batcher, dict):
        raise RenderError("spec.predictor.batcher must be an object")
    values = {}
    for name, attribute in (("maxBatchSize", "max_batch_size"), ("maxLatency", "max_latency_ms"),
                            ("timeout", "timeout_seconds")):
        value = batcher.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise RenderError(f"spec.predictor.batcher.{name} must be a positive integer, not {value!r}")
        values[attribute] = value
    return BatcherSpec(**values)


def parse_logger(logger: Any) -> LoggerSpec | None:
    """`logger` as given (None when absent); mode defaults to all, as KFServing's."""
    if logger is None:
        return None
    if not isinstance(logger, dict):
        raise RenderError("spec.predictor.logger must be an object")
    url, mode = logger.get("url"), logger.get("mode") or DEFAULT_LOGGER_MODE
    if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        raise RenderError(f"spec.predictor.logger.url must be an http:// or https:// URL, not {url!r}")
    if mode not in LOGGER_MODES:
        raise RenderError(f"spec.predictor.logger.mode: {mode!r} is not one of {', '.join(LOGGER_MODES)}")
    return LoggerSpec(url=url or None, mode=mode)


def parse_pytorch(pytorch: Any) -> PyTorchSpec:
    if not isinstance(pytorch, dict):
        raise RenderError(f"{_PYTORCH} is required")
    storage_uri = pytorch.get("storageUri")
    if not storage_uri:
        raise RenderError(f"{_PYTORCH}.storageUri is required")
    protocol = str(pytorch.get("protocolVersion") or DEFAULT_PROTOCOL)
    if protocol not in PROTOCOLS:
        raise RenderError(f"{_PYTORCH}.protocolVersion: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    ports = pytorch.get("ports") or []
    return PyTorchSpec(
        storage_uri=str(storage_uri),
        pvc=parse_pvc(str(storage_uri)),
        protocol_version=protocol,
        runtime_version=_optional_str(pytorch.get("runtimeVersion")),
        image=_optional_str(pytorch.get("image")),
        args=tuple(str(arg) for arg in pytorch.get("args") or ()),
        env=tuple(
            EnvVar(name=str(item["name"]), value=item.get("value"), value_from=item.get("valueFrom"))
            for item in pytorch.get("env") or ()
        ),
        resources=default_resources(pytorch.get("resources")),
        port=parse_port(ports[0] if ports else None, protocol),
    )


def parse_port(port: dict[str, Any] | None, protocol: str) -> ContainerPort:
    """The one routed port: the user's, else the protocol's default. grpc-v2's is named h2c when the user
    leaves the name out (it must be, for Knative to speak HTTP/2 to it)."""
    grpc = protocol == GRPC_PROTOCOL
    if port is None:
        return DEFAULT_GRPC_PORT if grpc else DEFAULT_PORT
    number, name = int(port["containerPort"]), port.get("name")
    where = f"{_PYTORCH}.ports[0]"
    if grpc and name not in (None, H2C):
        raise RenderError(f"{where}.name: protocolVersion {GRPC_PROTOCOL} is served over HTTP/2, so the port"
                          f" must be named {H2C!r} (or left unnamed), not {name!r}")
    if not grpc and name == H2C:
        raise RenderError(f"{where}.name: {H2C!r} (HTTP/2) is the port of protocolVersion {GRPC_PROTOCOL};"
                          f" {protocol} is served over HTTP/1.1 ({HTTP1!r} or no name)")
    if grpc and number == HTTP_PORT:
        raise RenderError(f"{where}.containerPort: {HTTP_PORT} is the runtime's HTTP port; protocolVersion"
                          f" {GRPC_PROTOCOL} serves gRPC on another ({DEFAULT_GRPC_PORT.container_port} by"
                          " default)")
    return ContainerPort(number, H2C if grpc else name, port.get("protocol"))


def parse_pvc(storage_uri: str) -> PersistentVolumeClaimSource | None:
    """The claim a `pvc://claim[/path]` URI reads from; None for any other scheme."""
    if not storage_uri.startswith(PVC_SCHEME):
        return None
    claim, _, path = storage_uri.removeprefix(PVC_SCHEME).partition("/")
    if not claim:
        raise RenderError(f"{_PYTORCH}.storageUri: pvc:// needs a claim name (pvc://claim/path)")
    return PersistentVolumeClaimSource(claim_name=claim, path=path.rstrip("/"))


def default_resources(resources: dict[str, Any] | None) -> ResourceRequirements:
    """The user's requests and limits with DEFAULT_RESOURCES for every key left unset.

    A default never contradicts the user: an unset request is lowered to the user's smaller limit,
    an unset limit is raised to the user's larger request.
    """
    resources = resources or {}
    requests = dict(resources.get("requests") or {})
    limits = dict(resources.get("limits") or {})
    for key, default in DEFAULT_RESOURCES.items():
        if key not in requests:
            requests[key] = limits[key] if key in limits and _less(limits[key], default) else default
        if key not in limits:
            limits[key] = requests[key] if _less(default, requests[key]) else default
    return ResourceRequirements(requests=requests, limits=limits)


def _less(a: Any, b: Any) -> bool:
    try:
        return parse_quantity(a) < parse_quantity(b)
    except ValueError as exc:
        raise RenderError(f"{_PYTORCH}.resources: {exc}") from None


def _set_fields(**fields: Any) -> dict[str, Any]:
    """A Kubernetes object with the fields that are set (an unset field is absent, never null)."""
    return {name: value for name, value in fields.items() if value is not None}


def _first(value: int | None, default: int) -> int:
    return default if value is None else value


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _optional_str(value: Any) -> str | None:
    return str(value) if value else None
