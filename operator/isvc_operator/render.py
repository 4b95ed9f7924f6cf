"""The predictor's Knative Service for an InferenceService: where each isvc field goes.

The isvc is parsed once (spec.py: typed, defaults applied), the pod is decided once (pod.py), and the
templates (templates/knative-service.yaml.j2 with predictor-pod.yaml.j2) only lay the values out, each
through `| tojson`. Field by field, isvc → ksvc (`template.` is the revision template), and who decides:

    metadata.name                    → metadata.name `{name}-predictor-default`    naming
                                       containers[0].args `--model-name {name}`    pod.runtime_args
    metadata.labels                  → metadata.labels, template.metadata.labels   naming
    metadata.annotations             → template.metadata.annotations               revision_annotations
    predictor.minReplicas            → autoscaling.knative.dev/minScale (1)        revision_annotations
    predictor.maxReplicas            → autoscaling.knative.dev/maxScale (if > 0)   revision_annotations
    predictor.containerConcurrency   → template.spec.containerConcurrency          knative_service_context
    predictor.timeout                → template.spec.timeoutSeconds                knative_service_context
    predictor.canaryTrafficPercent   → spec.traffic                                traffic.desired_traffic
    predictor.serviceAccountName,    → template.spec.* of the same name            pod.predictor_pod
      nodeSelector, tolerations, affinity
    pytorch.storageUri               → initContainers[0].args, a PVC volume        pod.storage_source
    pytorch.image, runtimeVersion    → containers[0].image                         pod.predictor_image
    pytorch.resources                → containers[0].resources (defaulted)         spec.default_resources
    pytorch.ports                    → containers[0].ports, --http-port, probes    pod.runtime_container
    pytorch.protocolVersion, env     → containers[0].env                           pod.runtime_env
      grpc-v2                        → the port h2c 8081, --grpc-port, grpc probes spec.parse_port, pod
    pytorch.args                     → containers[0].args, after the runtime's     pod.runtime_args
    predictor.batcher                → containers[0].args --batch-size,            pod.batcher_args
                                       --max-batch-delay, --response-timeout
    predictor.logger                 → containers[0].args --logger-url,            pod.logger_args
                                       --logger-mode (--logger-ca-bundle + a volume), env ISVC_NAME/NAMESPACE

Templates are package data (`isvc_operator.templates`, the repository's templates/); a cluster admin's
directory in ISVC_TEMPLATES_DIR is searched first, file by file.
"""

from __future__ import annotations

import importlib.resources
import os
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import yaml

from .config import MetricsConfig, OperatorConfig
from .credentials import StorageCredentials
from .errors import RenderError
from .naming import owner_reference, predictor_labels, predictor_service_name
from .pod import predictor_pod
from .spec import InferenceService, parse_inference_service
from .traffic import TAG_ROUTING_ANNOTATION, TEMPLATE_HASH_ANNOTATION, Rollout, desired_traffic, template_hash

__all__ = ["RenderError", "knative_service_context", "render_knative_service", "render_template",
           "revision_annotations"]

TEMPLATES_ENV = "ISVC_TEMPLATES_DIR"
TEMPLATES_PACKAGE = "isvc_operator.templates"
KNATIVE_SERVICE_TEMPLATE = "knative-service.yaml.j2"
# libyaml's safe loader when PyYAML was built with it (several times faster on every reconcile), else the
# pure-Python one: both construct only plain YAML types.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

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
# Annotations that describe the isvc object itself, not the revision: never copied.
_NOT_COPIED_PREFIXES = ("kubectl.kubernetes.io/", "kopf.zalando.org/")
# Replaced by the predictor spec, or about routing rather than the revision (a toggle must not create one).
_NOT_COPIED = (MIN_SCALE, MAX_SCALE, TAG_ROUTING_ANNOTATION)


def packaged_template(name: str) -> str | None:
    """A template shipped with the operator (None if there is no such file)."""
    resource = importlib.resources.files(TEMPLATES_PACKAGE) / name
    return resource.read_text(encoding="utf-8") if resource.is_file() else None


@cache
def _environment(override: str | None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(override)] if override else []
    loaders.append(jinja2.FunctionLoader(packaged_template))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )


def revision_annotations(isvc: InferenceService, metrics: MetricsConfig | None = None) -> dict[str, str]:
    """The isvc's annotations plus autoscaling from the predictor spec (minReplicas/maxReplicas win) and,
    with ``metrics.scrape``, Prometheus's scrape annotations for those the isvc does not set itself."""
    predictor = isvc.predictor
    annotations = {
        key: value
        for key, value in isvc.metadata.annotations.items()
        if key not in _NOT_COPIED and not key.startswith(_NOT_COPIED_PREFIXES)
    }
    annotations.setdefault(AUTOSCALING_CLASS, KPA)
    autoscaling_class = annotations[AUTOSCALING_CLASS]
    if autoscaling_class.endswith(_KNATIVE_CLASS_DOMAIN) and autoscaling_class not in (KPA, HPA):
        raise RenderError(
            f"metadata.annotations[{AUTOSCALING_CLASS}]: {autoscaling_class!r} is not a Knative autoscaler"
            f" class; use {KPA!r}, {HPA!r} or a custom class outside the knative.dev domain"
        )
    annotations[MIN_SCALE] = str(predictor.min_replicas)
    if predictor.max_replicas > 0:
        annotations[MAX_SCALE] = str(predictor.max_replicas)
    if metrics is not None and metrics.scrape:
        annotations.setdefault(SCRAPE, "true")
        annotations.setdefault(SCRAPE_PORT, str(metrics.port))
        annotations.setdefault(SCRAPE_PATH, metrics.path)
    return annotations


def knative_service_context(
    isvc: InferenceService, config: OperatorConfig, credentials: StorageCredentials | None = None
) -> dict[str, Any]:
    """Every value the ksvc template lays out (the pod's through predictor-pod.yaml.j2)."""
    metadata = isvc.metadata
    return {
        "name": predictor_service_name(metadata.name),
        "namespace": metadata.namespace,
        "labels": predictor_labels(metadata.name, metadata.labels),
        "owner": owner_reference(metadata.name, metadata.uid),
        "revision_annotations": revision_annotations(isvc, config.metrics),
        "container_concurrency": isvc.predictor.container_concurrency,
        "timeout_seconds": isvc.predictor.timeout_seconds,
        "pod": predictor_pod(isvc, config, credentials),
    }


def render_template(
    name: str, context: dict[str, Any], template_directory: Path | None = None
) -> dict[str, Any]:
    """A template rendered with `context` and parsed (every value went through `| tojson`). Templates are
    looked up in `template_directory`, else ISVC_TEMPLATES_DIR, then among the packaged ones."""
    override = str(template_directory) if template_directory else os.environ.get(TEMPLATES_ENV) or None
    try:
        text = _environment(override).get_template(name).render(context)
        rendered = yaml.load(text, Loader=_SAFE_LOADER)
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
    context = knative_service_context(parse_inference_service(isvc), config, credentials)
    rendered = render_template(KNATIVE_SERVICE_TEMPLATE, context, template_directory)
    spec = rendered.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("template"), dict):
        raise RenderError(f"template {KNATIVE_SERVICE_TEMPLATE} did not produce spec.template")
    digest = template_hash(spec["template"])
    metadata = rendered.setdefault("metadata", {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}), TEMPLATE_HASH_ANNOTATION: digest}
    spec["traffic"] = desired_traffic(isvc, live, digest, rollout)
    return rendered
