"""The predictor's pod: the storage initializer, the runtime container and the volumes they share.

One value for every way a predictor is deployed: templates/predictor-pod.yaml.j2 lays it out, under
`spec.template.spec` of the Knative Service today and of a Deployment in a raw deployment mode. Every
path, volume name and probe is decided here; the template holds none of them.

- The storage initializer (`python -m isvc_runtime.storage SRC DEST`) copies `storageUri` into the
  emptyDir `kfserving-provision-location` at /mnt/models; a `pvc://claim/path` source is the claim
  mounted read-only at /mnt/pvc. Only it gets the storage credentials (credentials.py).
- The runtime (`python -m isvc_runtime --model-store /mnt/models ...`) mounts the copy read-only.
  Readiness is `/v2/health/ready` (503 until every model is loaded); liveness and start-up are
  `/v2/health/live`, which answers whenever the server's event loop does, loading or not. The start-up
  probe gives a slow start (large archives are unpacked before the server binds) as long as Knative's
  default progress deadline, 10 minutes, before liveness may restart the container.
- With protocolVersion grpc-v2 the routed port (h2c) is the runtime's gRPC port (`--grpc-port`; HTTP stays
  on 8080) and the same three probes are `grpc` probes of grpc.health.v1 on it: readiness asks for the
  server as a whole (service "", SERVING once every model is loaded), liveness and start-up for the
  service "liveness" (SERVING whenever the server answers; the name Kubernetes' probe documentation uses).
  HTTP probes could not stay: Knative rewrites an httpGet liveness probe onto the routed port
  (knative.dev/serving pkg/reconciler/revision/resources/deploy.go, rewriteUserLivenessProbe), where HTTP/1.1
  meets a gRPC server; its webhook allows grpc probes on any port (pkg/apis/serving/k8s_validation.go,
  validateProbe checks only httpGet's and tcpSocket's named ports against the container port).
- Both containers run with the ConfigMap's `securityContext` (config.py): restrictive by default.
- `batcher` and `logger` become runtime flags (`runtime_args`), their unset fields the ConfigMap's; an
  https logger sink with the ConfigMap's `logger.caBundle` gets that ConfigMap mounted read-only at
  /etc/isvc-logger/ca and passed as `--logger-ca-bundle`. The logger's CloudEvents name the isvc and its
  namespace from ISVC_NAME and ISVC_NAMESPACE (`runtime_env`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import LoggerConfig, MetricsConfig, OperatorConfig
from .credentials import StorageCredentials
from .spec import HTTP_PORT, BatcherSpec, InferenceService, LoggerSpec, PyTorchSpec

MODEL_DIR = "/mnt/models"
PVC_MOUNT = "/mnt/pvc"
PROVISION_VOLUME = "kfserving-provision-location"
PVC_VOLUME = "kfserving-pvc-source"
STORAGE_INITIALIZER = "storage-initializer"
RUNTIME_CONTAINER = "kfserving-container"
RUNTIME_METRICS_PORT = 8082  # the runtime's default (TorchServe's metrics port)
LOGGER_CA_VOLUME = "isvc-logger-ca"
LOGGER_CA_MOUNT = "/etc/isvc-logger/ca"
READINESS_PATH = "/v2/health/ready"
LIVENESS_PATH = "/v2/health/live"
# grpc.health.v1 services the runtime answers (isvc_runtime.grpc.service.HealthService): "" is the server
# as a whole (ready), "liveness" whether it answers at all.
GRPC_READINESS_SERVICE = ""
GRPC_LIVENESS_SERVICE = "liveness"
LIVENESS = {"periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3}
# The kubelet runs no readiness probe before the start-up probe succeeds (Knative's queue-proxy waits for it
# too): probed every second, the pod is ready within a second of the runtime answering, not up to 5 s later;
# 600 tries keep the 10 minutes Knative's progress deadline allows a slow start.
STARTUP = {"periodSeconds": 1, "timeoutSeconds": 5, "failureThreshold": 600}


@dataclass(frozen=True)
class Container:
    """One container of the pod, every field already in its Kubernetes form (None or empty: not set)."""

    name: str
    image: str
    args: list[str]
    resources: dict[str, Any]
    volume_mounts: list[dict[str, Any]]
    security_context: dict[str, Any] | None = None
    env: list[dict[str, Any]] = field(default_factory=list)
    ports: list[dict[str, Any]] = field(default_factory=list)
    readiness_probe: dict[str, Any] | None = None
    liveness_probe: dict[str, Any] | None = None
    startup_probe: dict[str, Any] | None = None
    termination_message_policy: str | None = None


@dataclass(frozen=True)
class PredictorPod:
    storage_initializer: Container
    runtime: Container
    volumes: list[dict[str, Any]]
    service_account_name: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    affinity: dict[str, Any] | None = None


def predictor_pod(
    isvc: InferenceService, config: OperatorConfig, credentials: StorageCredentials | None = None
) -> PredictorPod:
    """The pod that serves the isvc's predictor, from its spec, the operator's config and the storage
    credentials of the predictor's ServiceAccount."""
    predictor = isvc.predictor
    credentials = credentials or StorageCredentials()
    provision = {"name": PROVISION_VOLUME, "emptyDir": {}}
    volumes, initializer_mounts = [provision], [{"name": PROVISION_VOLUME, "mountPath": MODEL_DIR}]
    if predictor.pytorch.pvc is not None:
        claim = {"claimName": predictor.pytorch.pvc.claim_name, "readOnly": True}
        volumes.append({"name": PVC_VOLUME, "persistentVolumeClaim": claim})
        initializer_mounts.append({"name": PVC_VOLUME, "mountPath": PVC_MOUNT, "readOnly": True})
    volumes += credentials.volumes
    initializer_mounts += credentials.volume_mounts
    if logger_ca_file(isvc, config.logger) is not None:
        volumes.append({"name": LOGGER_CA_VOLUME, "configMap": {"name": config.logger.ca_bundle}})
    return PredictorPod(
        storage_initializer=Container(
            name=STORAGE_INITIALIZER,
            image=config.storage_initializer.image,
            args=[storage_source(predictor.pytorch), MODEL_DIR],
            resources=config.storage_initializer.resources(),
            volume_mounts=initializer_mounts,
            security_context=config.security_context,
            env=list(credentials.env),
            termination_message_policy="FallbackToLogsOnError",
        ),
        runtime=runtime_container(isvc, config),
        volumes=volumes,
        service_account_name=predictor.service_account_name,
        node_selector=predictor.node_selector,
        tolerations=list(predictor.tolerations),
        affinity=predictor.affinity,
    )


def runtime_container(isvc: InferenceService, config: OperatorConfig) -> Container:
    pytorch = isvc.predictor.pytorch
    port = pytorch.port.container_port

    def probe(path: str, service: str, **timing: int) -> dict[str, Any]:
        if pytorch.grpc:
            return {"grpc": {"port": port, "service": service}, **timing}
        return {"httpGet": {"path": path, "port": port}, **timing}

    mounts = [{"name": PROVISION_VOLUME, "mountPath": MODEL_DIR, "readOnly": True}]
    if logger_ca_file(isvc, config.logger) is not None:
        mounts.append({"name": LOGGER_CA_VOLUME, "mountPath": LOGGER_CA_MOUNT, "readOnly": True})
    return Container(
        name=RUNTIME_CONTAINER,
        image=predictor_image(pytorch, config),
        args=runtime_args(isvc, config),
        resources=pytorch.resources.manifest(),
        volume_mounts=mounts,
        security_context=config.security_context,
        env=runtime_env(isvc, config.metrics),
        ports=[pytorch.port.manifest()],
        readiness_probe=probe(READINESS_PATH, GRPC_READINESS_SERVICE),
        liveness_probe=probe(LIVENESS_PATH, GRPC_LIVENESS_SERVICE, **LIVENESS),
        startup_probe=probe(LIVENESS_PATH, GRPC_LIVENESS_SERVICE, **STARTUP),
    )


def predictor_image(pytorch: PyTorchSpec, config: OperatorConfig) -> str:
    """The user's `image`, else the configured runtime image tagged by runtimeVersion or the default."""
    if pytorch.image:
        return pytorch.image
    if pytorch.runtime_version:
        tag = pytorch.runtime_version
    elif pytorch.requests_gpu:
        tag = config.pytorch.default_gpu_image_version
    else:
        tag = config.pytorch.default_image_version
    return f"{config.pytorch.image}:{tag}"


def runtime_args(isvc: InferenceService, config: OperatorConfig) -> list[str]:
    """The runtime's command line: the provisioned model store, the isvc's name as the model's, the
    routed port (`--http-port`; grpc-v2: `--grpc-port`, HTTP on 8080), the batcher's and the logger's flags,
    then the user's args (a repeated flag: the last wins)."""
    predictor = isvc.predictor
    pytorch = predictor.pytorch
    routed = str(pytorch.port.container_port)
    args = ["--model-store", MODEL_DIR, "--model-name", isvc.metadata.name]
    if pytorch.grpc:
        args += ["--http-port", str(HTTP_PORT), "--grpc-port", routed]
    else:
        args += ["--http-port", routed]
    if predictor.batcher is not None:
        args += batcher_args(predictor.batcher.with_defaults(config.batcher))
    if predictor.logger is not None:
        logger = predictor.logger.with_defaults(config.logger)
        args += logger_args(logger, logger_ca_file(isvc, config.logger))
    return [*args, *pytorch.args]


def batcher_args(batcher: BatcherSpec) -> list[str]:
    """KFServing's batcher as the runtime's flags: maxBatchSize and maxLatency (ms) replace
    config.properties' batchSize and maxBatchDelay for every model; timeout (s) bounds each request's wait."""
    return [
        "--batch-size", str(batcher.max_batch_size),
        "--max-batch-delay", str(batcher.max_latency_ms),
        "--response-timeout", str(batcher.timeout_seconds),
    ]


def logger_args(logger: LoggerSpec, ca_file: str | None) -> list[str]:
    args = ["--logger-url", str(logger.url), "--logger-mode", logger.mode]
    return [*args, "--logger-ca-bundle", ca_file] if ca_file is not None else args


def logger_ca_file(isvc: InferenceService, config: LoggerConfig) -> str | None:
    """Where the runtime reads the CA certificates of an https sink: the ConfigMap's caBundle mounted, or
    None (the system's CAs; an http sink; no logger)."""
    logger = isvc.predictor.logger
    if logger is None or not config.ca_bundle:
        return None
    if not str(logger.with_defaults(config).url).startswith("https://"):
        return None
    return f"{LOGGER_CA_MOUNT}/{config.ca_cert_file}"


def runtime_env(isvc: InferenceService, metrics: MetricsConfig) -> list[dict[str, Any]]:
    """PROTOCOL_VERSION (the protocol of the routed port; the runtime answers `GET /` in it and, for
    grpc-v2, refuses to start without its gRPC port); for a metrics port other than the runtime's default,
    TS_METRICS_ADDRESS; with a logger, ISVC_NAME and ISVC_NAMESPACE (its events' inferenceservicename and
    namespace); then the user's env, whose names win. (The runtime's ``isvc`` and ``revision`` metrics
    labels come from ISVC_NAME, else K_SERVICE, ``{isvc}-predictor-default``, and K_REVISION, which Knative
    sets in every pod.)"""
    pytorch = isvc.predictor.pytorch
    given = {item.name for item in pytorch.env}
    env = [{"name": "PROTOCOL_VERSION", "value": pytorch.protocol_version}]
    if metrics.port != RUNTIME_METRICS_PORT:
        env.append({"name": "TS_METRICS_ADDRESS", "value": f"http://0.0.0.0:{metrics.port}"})
    if isvc.predictor.logger is not None:
        env.append({"name": "ISVC_NAME", "value": isvc.metadata.name})
        env.append({"name": "ISVC_NAMESPACE", "value": isvc.metadata.namespace})
    return [item for item in env if item["name"] not in given] + [item.manifest() for item in pytorch.env]


def storage_source(pytorch: PyTorchSpec) -> str:
    """What the storage initializer copies: the URI, or for `pvc://claim/path` that path in the claim."""
    if pytorch.pvc is None:
        return pytorch.storage_uri
    return f"{PVC_MOUNT}/{pytorch.pvc.path}" if pytorch.pvc.path else PVC_MOUNT
