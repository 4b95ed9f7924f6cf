"""Render the predictor's Knative Service for an InferenceService: pure functions over plain dicts.

`knative_service_context` decides every value (image, args, resources, annotations, volumes);
the Jinja2 template (templates/knative-service.yaml.j2) only lays them out, each through `| tojson`.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import yaml

from .config import MetricsConfig, OperatorConfig
from .credentials import StorageCredentials
from .naming import predictor_labels, predictor_service_name
from .quantity import parse_quantity
from .traffic import TAG_ROUTING_ANNOTATION, TEMPLATE_HASH_ANNOTATION, Rollout, desired_traffic, template_hash

TEMPLATES_ENV = "ISVC_TEMPLATES_DIR"
KNATIVE_SERVICE_TEMPLATE = "knative-service.yaml.j2"

MODEL_DIR = "/mnt/models"
PVC_MOUNT = "/mnt/pvc"
PROVISION_VOLUME = "kfserving-provision-location"
PVC_VOLUME = "kfserving-pvc-source"
DEFAULT_HTTP_PORT = 8080
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_RESOURCES = {"cpu": "1", "memory": "2Gi"}

MIN_SCALE = "autoscaling.knative.dev/minScale"
MAX_SCALE = "autoscaling.knative.dev/maxScale"
AUTOSCALING_CLASS = "autoscaling.knative.dev/class"
# Knative's class names (knative.dev/serving pkg/apis/autoscaling/register.go: autoscaling.KPA / HPA).
# Knative's webhook refuses any other class ending in ".knative.dev" and leaves custom classes to their
# autoscaler (annotation_validation.go, validateClass).
KPA = "kpa.autoscaling.knative.dev"
HPA = "hpa.autoscaling.knative.dev"
_KNATIVE_CLASS_DOMAIN = ".knative.dev"
SCRAPE = "prometheus.io/scrape"
SCRAPE_PORT = "prometheus.io/port"
SCRAPE_PATH = "prometheus.io/path"
RUNTIME_METRICS_PORT = 8082  # the runtime's default (TorchServe's metrics port)
# Annotations that describe the isvc object itself, not the revision: never copied.
_NOT_COPIED_PREFIXES = ("kubectl.kubernetes.io/", "kopf.zalando.org/")
# Replaced by the predictor spec, or about routing rather than the revision (a toggle must not create one).
_NOT_COPIED = (MIN_SCALE, MAX_SCALE, TAG_ROUTING_ANNOTATION)


class RenderError(ValueError):
    """The isvc cannot be turned into a Knative Service; the message is shown to the user."""


def templates_dir() -> Path:
    override = os.environ.get(TEMPLATES_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "templates"


@cache
def _environment(directory: str) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )


def predictor_image(pytorch: dict[str, Any], config: OperatorConfig) -> str:
    """The user's `image`, else the configured runtime image tagged by runtimeVersion or the default."""
    if pytorch.get("image"):
        return str(pytorch["image"])
    limits = (pytorch.get("resources") or {}).get("limits") or {}
    if pytorch.get("runtimeVersion"):
        tag = str(pytorch["runtimeVersion"])
    elif GPU_RESOURCE in limits:
        tag = config.pytorch.default_gpu_image_version
    else:
        tag = config.pytorch.default_image_version
    return f"{config.pytorch.image}:{tag}"


def container_resources(resources: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The user's requests and limits with cpu 1 / memory 2Gi for every key left unset.

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
    return {"requests": requests, "limits": limits}


def _less(a: Any, b: Any) -> bool:
    try:
        return parse_quantity(a) < parse_quantity(b)
    except ValueError as exc:
        raise RenderError(f"spec.predictor.pytorch.resources: {exc}") from None


def revision_annotations(isvc: dict[str, Any], metrics: MetricsConfig | None = None) -> dict[str, str]:
    """The isvc's annotations plus autoscaling from the predictor spec (minReplicas/maxReplicas win) and,
    with ``metrics.scrape``, Prometheus's scrape annotations for those the isvc does not set itself."""
    predictor = isvc["spec"]["predictor"]
    given = isvc.get("metadata", {}).get("annotations") or {}
    annotations = {
        key: value
        for key, value in given.items()
        if key not in _NOT_COPIED and not key.startswith(_NOT_COPIED_PREFIXES)
    }
    annotations.setdefault(AUTOSCALING_CLASS, KPA)
    autoscaling_class = annotations[AUTOSCALING_CLASS]
    if autoscaling_class.endswith(_KNATIVE_CLASS_DOMAIN) and autoscaling_class not in (KPA, HPA):
        raise RenderError(
            f"metadata.annotations[{AUTOSCALING_CLASS}]: {autoscaling_class!r} is not a Knative autoscaler"
            f" class; use {KPA!r}, {HPA!r} or a custom class outside the knative.dev domain"
        )
    min_replicas = predictor.get("minReplicas")
    annotations[MIN_SCALE] = str(1 if min_replicas is None else min_replicas)
    if (predictor.get("maxReplicas") or 0) > 0:
        annotations[MAX_SCALE] = str(predictor["maxReplicas"])
    if metrics is not None and metrics.scrape:
        annotations.setdefault(SCRAPE, "true")
        annotations.setdefault(SCRAPE_PORT, str(metrics.port))
        annotations.setdefault(SCRAPE_PATH, metrics.path)
    return annotations


def runtime_env(
    user_env: list[dict[str, Any]], protocol: str, metrics: MetricsConfig
) -> list[dict[str, Any]]:
    """PROTOCOL_VERSION and, for a metrics port other than the runtime's default, TS_METRICS_ADDRESS;
    then the user's env, whose names win. (The runtime's ``isvc`` and ``revision`` metrics labels come
    from K_SERVICE, ``{isvc}-predictor-default``, and K_REVISION, which Knative sets in every pod.)"""
    given = {item.get("name") for item in user_env}
    env = [{"name": "PROTOCOL_VERSION", "value": protocol}]
    if metrics.port != RUNTIME_METRICS_PORT:
        env.append({"name": "TS_METRICS_ADDRESS", "value": f"http://0.0.0.0:{metrics.port}"})
    return [item for item in env if item["name"] not in given] + user_env


def storage_source(storage_uri: str) -> tuple[str, dict[str, Any] | None]:
    """Where the storage initializer reads from, and the PVC volume that needs (None if no PVC).

    `pvc://claim/some/path` mounts the claim read-only at /mnt/pvc and reads /mnt/pvc/some/path.
    """
    if not storage_uri.startswith("pvc://"):
        return storage_uri, None
    claim, _, path = storage_uri.removeprefix("pvc://").partition("/")
    if not claim:
        raise RenderError("spec.predictor.pytorch.storageUri: pvc:// needs a claim name (pvc://claim/path)")
    volume = {"name": PVC_VOLUME, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
    source = f"{PVC_MOUNT}/{path}".rstrip("/") if path else PVC_MOUNT
    return source, volume


def knative_service_context(
    isvc: dict[str, Any], config: OperatorConfig, credentials: StorageCredentials | None = None
) -> dict[str, Any]:
    """Every value the ksvc template needs, decided from the isvc, the operator's config and the storage
    credentials of the predictor's ServiceAccount (for the storage-initializer only)."""
    metadata = isvc["metadata"]
    name = metadata["name"]
    predictor = isvc["spec"]["predictor"]
    pytorch = predictor.get("pytorch")
    if not isinstance(pytorch, dict):
        raise RenderError("spec.predictor.pytorch is required")
    storage_uri = pytorch.get("storageUri")
    if not storage_uri:
        raise RenderError("spec.predictor.pytorch.storageUri is required")

    ports = pytorch.get("ports") or [{"containerPort": DEFAULT_HTTP_PORT, "name": "http1", "protocol": "TCP"}]
    http_port = int(ports[0]["containerPort"])
    protocol = pytorch.get("protocolVersion") or "v1"
    env = runtime_env(list(pytorch.get("env") or []), protocol, config.metrics)
    source, pvc_volume = storage_source(str(storage_uri))
    init_mounts = [{"name": PROVISION_VOLUME, "mountPath": MODEL_DIR}]
    volumes: list[dict[str, Any]] = [{"name": PROVISION_VOLUME, "emptyDir": {}}]
    if pvc_volume is not None:
        init_mounts.append({"name": PVC_VOLUME, "mountPath": PVC_MOUNT, "readOnly": True})
        volumes.append(pvc_volume)
    credentials = credentials or StorageCredentials()
    init_mounts.extend(credentials.volume_mounts)
    volumes.extend(credentials.volumes)
    initializer = config.storage_initializer
    labels = predictor_labels(name, metadata.get("labels"))
    return {
        "name": predictor_service_name(name),
        "namespace": metadata["namespace"],
        "labels": labels,
        "owner": {"name": name, "uid": metadata["uid"]},
        "revision_annotations": revision_annotations(isvc, config.metrics),
        "container_concurrency": predictor.get("containerConcurrency"),
        "timeout_seconds": predictor.get("timeout"),
        "service_account_name": predictor.get("serviceAccountName"),
        "node_selector": predictor.get("nodeSelector"),
        "tolerations": predictor.get("tolerations"),
        "affinity": predictor.get("affinity"),
        "storage_initializer": {
            "image": initializer.image,
            "args": [source, MODEL_DIR],
            "resources": {
                "requests": {"cpu": initializer.cpu_request, "memory": initializer.memory_request},
                "limits": {"cpu": initializer.cpu_limit, "memory": initializer.memory_limit},
            },
            "volume_mounts": init_mounts,
            "env": list(credentials.env),
        },
        "container": {
            "image": predictor_image(pytorch, config),
            "args": [
                "--model-store", MODEL_DIR,
                "--model-name", name,
                "--http-port", str(http_port),
                *[str(arg) for arg in pytorch.get("args") or []],
            ],
            "env": env,
            "ports": ports,
            "http_port": http_port,
            "resources": container_resources(pytorch.get("resources")),
        },
        "volumes": volumes,
    }


def render_template(
    name: str, context: dict[str, Any], template_directory: Path | None = None
) -> dict[str, Any]:
    """One of templates/ rendered with `context` and parsed (every value went through `| tojson`)."""
    environment = _environment(str(template_directory or templates_dir()))
    try:
        text = environment.get_template(name).render(context)
        rendered = yaml.safe_load(text)
    except (jinja2.TemplateError, yaml.YAMLError) as exc:
        raise RenderError(f"template {name} failed: {exc}") from exc
    if not isinstance(rendered, dict):
        raise RenderError(f"template {name} did not produce an object")
    return rendered


def render_knative_service(
    isvc: dict[str, Any],
    config: OperatorConfig,
    template_directory: Path | None = None,
    *,
    live: dict[str, Any] | None = None,
    credentials: StorageCredentials | None = None,
    rollout: Rollout | None = None,
) -> dict[str, Any]:
    """The predictor's Knative Service (a dict ready for server-side apply).

    The template lays out everything but the traffic, which depends on the revision template itself:
    its hash goes into the `serving.kubeflow.org/predictor-template-hash` annotation and, with the live
    ksvc (`live`) and the rolled-out revisions, decides `spec.traffic` (see traffic.py).
    """
    context = knative_service_context(isvc, config, credentials)
    rendered = render_template(KNATIVE_SERVICE_TEMPLATE, context, template_directory)
    spec = rendered.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("template"), dict):
        raise RenderError(f"template {KNATIVE_SERVICE_TEMPLATE} did not produce spec.template")
    digest = template_hash(spec["template"])
    metadata = rendered.setdefault("metadata", {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}), TEMPLATE_HASH_ANNOTATION: digest}
    spec["traffic"] = desired_traffic(isvc, live, digest, rollout)
    return rendered
