"""Raw deployment mode: the predictor as a Deployment, a Service and a HorizontalPodAutoscaler (no Knative).

An isvc is deployed raw when its annotation `serving.kubeflow.org/deploymentMode` (or KServe's
`serving.kserve.io/deploymentMode`) says `RawDeployment`, or it has none and the ConfigMap's
`deploy.defaultDeploymentMode` says so (the default stays `Serverless`: a Knative Service). The names
and values follow KServe's (pkg/constants/constants.go: DeploymentMode, AutoscalerClass,
AutoscalerMetrics, TargetUtilizationPercentage; the HPA as in
pkg/controller/v1beta1/inferenceservice/reconcilers/hpa/hpa_reconciler.go: a Resource metric with a
Utilization target, CPU at 80% unless told, minReplicas at least 1, maxReplicas at least minReplicas; no
HPA for the autoscaler classes `external` and `none`).

All three objects are named `{isvc}-predictor-default` and carry the predictor's labels; the Deployment's
pod is the very value the Knative Service runs (pod.predictor_pod, laid out by predictor-pod.yaml.j2).
While an HPA exists the Deployment leaves `spec.replicas` to it (server-side apply: a field we do not send
is not ours, so the HPA controller's scale is never undone); without one it runs minReplicas.

The Service's port 80 goes to the predictor's routed port. For protocolVersion grpc-v2 that port speaks gRPC
(HTTP/2 cleartext): the Service port is named `grpc` with appProtocol `kubernetes.io/h2c`, the standard
application protocol Knative gives its own HTTP/2 Services (knative.dev/networking pkg/apis/networking/
ports.go, AppProtocolH2C; serving's pkg/reconciler/serverlessservice/resources/services.go), so Istio and
Gateway API implementations proxy it as HTTP/2 (Istio reads appProtocol before the port name: istio/istio
pkg/config/kube/conversion.go, ConvertProtocol).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import RAW_DEPLOYMENT, SERVERLESS, OperatorConfig
from .credentials import StorageCredentials
from .errors import RenderError
from .naming import owner_reference, predictor_labels, predictor_service_name
from .pod import predictor_pod
from .render import render_template, revision_annotations
from .spec import InferenceService, parse_inference_service, parse_metadata

DEPLOYMENT_TEMPLATE = "predictor-deployment.yaml.j2"
SERVICE_TEMPLATE = "predictor-service.yaml.j2"
HPA_TEMPLATE = "predictor-hpa.yaml.j2"

#: Both API groups' spellings of each annotation; the first (ours) wins when both are set.
PREFIXES = ("serving.kubeflow.org", "serving.kserve.io")
DEPLOYMENT_MODE = "deploymentMode"
AUTOSCALER_CLASS = "autoscalerClass"
METRICS = "metrics"
TARGET_UTILIZATION = "targetUtilizationPercentage"

HPA_CLASS, EXTERNAL_CLASS, NONE_CLASS = "hpa", "external", "none"
AUTOSCALER_CLASSES = (HPA_CLASS, EXTERNAL_CLASS, NONE_CLASS)
CPU, MEMORY = "cpu", "memory"
DEFAULT_UTILIZATION = 80
SERVICE_PORT = 80
H2C_APP_PROTOCOL = "kubernetes.io/h2c"


@dataclass(frozen=True)
class Autoscaling:
    """What the HPA says (None: no HPA, the autoscaler class is external or none)."""

    min_replicas: int
    max_replicas: int
    metric: str
    target_utilization: int


def annotation(annotations: dict[str, str], name: str) -> tuple[str, str] | None:
    """(full key, value) of `name` under the first prefix that sets it."""
    for prefix in PREFIXES:
        key = f"{prefix}/{name}"
        if key in annotations:
            return key, annotations[key]
    return None


def deployment_mode(isvc: dict[str, Any], config: OperatorConfig) -> str:
    """`Serverless` or `RawDeployment`; RenderError names an annotation with another value."""
    found = annotation(parse_metadata(isvc).annotations, DEPLOYMENT_MODE)
    if found is None:
        return config.default_deployment_mode
    key, value = found
    if value not in (SERVERLESS, RAW_DEPLOYMENT):
        raise RenderError(f"metadata.annotations[{key}]: {value!r} is not a deployment mode;"
                          f" use {SERVERLESS!r} or {RAW_DEPLOYMENT!r}")
    return value


def is_raw(isvc: dict[str, Any], config: OperatorConfig) -> bool:
    """Raw mode; an annotation with an unknown mode counts as the ConfigMap's default here (the render
    reports it)."""
    try:
        return deployment_mode(isvc, config) == RAW_DEPLOYMENT
    except RenderError:
        return config.default_deployment_mode == RAW_DEPLOYMENT


def autoscaling(isvc: InferenceService) -> Autoscaling | None:
    """The HPA's bounds, metric and target from the predictor spec and KServe's annotations."""
    annotations = isvc.metadata.annotations
    found = annotation(annotations, AUTOSCALER_CLASS)
    autoscaler_class = HPA_CLASS if found is None else found[1]
    if autoscaler_class not in AUTOSCALER_CLASSES:
        raise RenderError(f"metadata.annotations[{found[0] if found else AUTOSCALER_CLASS}]:"
                          f" {autoscaler_class!r} is not an autoscaler class; use one of"
                          f" {', '.join(AUTOSCALER_CLASSES)}")
    if autoscaler_class != HPA_CLASS:
        return None
    found = annotation(annotations, METRICS)
    metric = CPU if found is None else found[1]
    if metric not in (CPU, MEMORY):
        raise RenderError(f"metadata.annotations[{found[0] if found else METRICS}]: {metric!r} is not a"
                          f" raw-mode metric; use {CPU!r} or {MEMORY!r}")
    found = annotation(annotations, TARGET_UTILIZATION)
    target = DEFAULT_UTILIZATION
    if found is not None:
        if not found[1].isdigit() or not 1 <= int(found[1]) <= 100:
            raise RenderError(f"metadata.annotations[{found[0]}]: {found[1]!r} is not a percentage"
                              " (an integer from 1 to 100)")
        target = int(found[1])
    min_replicas = max(isvc.predictor.min_replicas, 1)
    return Autoscaling(min_replicas=min_replicas, max_replicas=max(isvc.predictor.max_replicas, min_replicas),
                       metric=metric, target_utilization=target)


def raw_context(isvc: InferenceService, config: OperatorConfig,
                credentials: StorageCredentials | None = None) -> dict[str, Any]:
    """Every value the three templates lay out (the pod's through predictor-pod.yaml.j2)."""
    metadata = isvc.metadata
    if isvc.predictor.canary_traffic_percent is not None:
        raise RenderError("spec.predictor.canaryTrafficPercent: canary rollouts need the Serverless"
                          " (Knative) deployment mode")
    scaling = autoscaling(isvc)
    pod = predictor_pod(isvc, config, credentials)
    name = predictor_service_name(metadata.name)
    grpc = isvc.predictor.pytorch.grpc
    return {
        "name": name,
        "namespace": metadata.namespace,
        "labels": predictor_labels(metadata.name, metadata.labels),
        "selector": predictor_labels(metadata.name),  # immutable: only the labels we decide
        "owner": owner_reference(metadata.name, metadata.uid),
        "pod_annotations": _pod_annotations(isvc, config),
        "replicas": None if scaling is not None else max(isvc.predictor.min_replicas, 1),
        "autoscaling": scaling,
        "service_port": SERVICE_PORT,
        "service_port_name": "grpc" if grpc else "http",
        "app_protocol": H2C_APP_PROTOCOL if grpc else None,
        "target_port": isvc.predictor.pytorch.port.container_port,
        "pod": pod,
    }


def _pod_annotations(isvc: InferenceService, config: OperatorConfig) -> dict[str, str]:
    """The isvc's annotations and the scrape annotations, without Knative's autoscaling ones."""
    return {key: value for key, value in revision_annotations(isvc, config.metrics).items()
            if not key.startswith("autoscaling.knative.dev/")}


def render_raw(isvc: dict[str, Any], config: OperatorConfig, template_directory: Path | None = None, *,
               credentials: StorageCredentials | None = None) -> dict[str, dict[str, Any] | None]:
    """The raw predictor's objects: {"deployment", "service", "hpa"} (hpa None: none wanted)."""
    deployment_mode(isvc, config)  # an annotation naming no mode is reported, not guessed at
    context = raw_context(parse_inference_service(isvc), config, credentials)
    return {
        "deployment": render_template(DEPLOYMENT_TEMPLATE, context, template_directory),
        "service": render_template(SERVICE_TEMPLATE, context, template_directory),
        "hpa": None if context["autoscaling"] is None
        else render_template(HPA_TEMPLATE, context, template_directory),
    }
