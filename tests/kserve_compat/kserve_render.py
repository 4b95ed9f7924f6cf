"""What KServe's controller makes of a ClusterServingRuntime and an InferenceService: the predictor container
and the one port traffic reaches it on. Pure functions over plain dicts (Kubernetes JSON), each following
one piece of kserve/kserve (read at aaac4e29, 2026-08) or Knative Serving; they stand in for the
controller, which does not run here.

- :func:`runtime_defaults`: ``SetRuntimeDefaults`` / ``SetTorchServeDefaults``
  (pkg/apis/serving/v1beta1/inference_service_defaults.go): for a runtime annotated
  ``serving.kserve.io/server-type: torchserve``, protocol v1 unless set, the label ``serviceEnvelope``
  (``kserve``; ``kservev2`` for v2 and grpc-v2) and the env ``PROTOCOL_VERSION``.
- :func:`merge_containers`: ``MergeRuntimeContainers`` (pkg/controller/v1beta1/inferenceservice/utils/
  utils.go): a strategic merge of the isvc's container onto the runtime's (``env`` merged by name, ``ports``
  by containerPort, other fields replaced), except that ``args`` are concatenated, runtime's first.
- :func:`replace_placeholders`: ``ReplacePlaceholders`` (same file): the container is marshalled to JSON,
  parsed as a Go ``text/template`` and executed with the isvc's ObjectMeta, so ``{{.Name}}``,
  ``{{.Namespace}}``, ``{{.Labels.KEY}}`` and ``{{.Annotations.KEY}}`` are substituted as raw text; a
  missing map key prints Go's ``<no value>``.
- :func:`update_image_tag`: ``UpdateImageTag`` (same file): with a GPU requested, a torchserve-type
  runtime's image gets the ``-gpu`` tag suffix.
- :func:`predictor_container`: the order ``predictor.go`` (pkg/controller/v1beta1/inferenceservice/
  components/predictor.go, ``buildPodSpec``) applies them in.
- :func:`serving_port`: where traffic reaches the container. Serverless: Knative Serving takes the single
  declared port (``validateContainerPorts`` in knative/serving pkg/apis/serving/k8s_validation.go: at
  most one, named ``http1``, ``h2c`` or nothing; none means 8080, HTTP/1), ``h2c`` meaning HTTP/2 cleartext,
  which gRPC needs. Raw deployment: ``createDefaultSvc`` (pkg/controller/v1beta1/inferenceservice/
  reconcilers/service/service_reconciler.go): the first declared port behind Service port 80, with
  ``appProtocol: kubernetes.io/h2c`` when its name contains ``grpc`` or ``h2c``; none means 8080.
  KServe itself never picks a port per protocol: a grpc-v2 user declares ``ports: [{name: h2c,
  containerPort: ...}]`` on the predictor (docs/samples/v1beta1/torchserve/v1/grpc.yaml,
  docs/samples/v1beta1/tensorflow/grpc.yaml).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TORCHSERVE_SERVER_TYPE = "torchserve"
SERVER_TYPE_ANNOTATION = "serving.kserve.io/server-type"
PREDICTOR_CONTAINER = "kserve-container"
KNATIVE_DEFAULT_PORT = 8080  # knative: the user port when none is declared
KSERVE_DEFAULT_HTTP_PORT = 8080  # kserve pkg/constants: InferenceServiceDefaultHttpPort
GO_NO_VALUE = "<no value>"

_ACTION = re.compile(r"\{\{(.*?)\}\}")
_FIELD_CHAIN = re.compile(r"^\s*((?:\.[A-Za-z0-9_./-]+))\s*$")


def runtime_defaults(isvc: Mapping[str, Any], runtime_annotations: Mapping[str, str]) -> dict[str, Any]:
    """The isvc after ``SetRuntimeDefaults`` for the runtime's server type (only torchserve is modelled)."""
    result = copy.deepcopy(dict(isvc))
    if runtime_annotations.get(SERVER_TYPE_ANNOTATION) != TORCHSERVE_SERVER_TYPE:
        return result
    model = result["spec"]["predictor"].setdefault("model", {})
    protocol = model.setdefault("protocolVersion", "v1")
    labels = result.setdefault("metadata", {}).setdefault("labels", {})
    labels["serviceEnvelope"] = "kservev2" if protocol in ("v2", "grpc-v2") else "kserve"
    model["env"] = [*model.get("env", []), {"name": "PROTOCOL_VERSION", "value": protocol}]
    return result


def _merge_by_key(base: list[dict[str, Any]], patch: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    merged = [dict(item) for item in base]
    for item in patch:
        for existing in merged:
            if existing.get(key) == item.get(key):
                existing.update(item)
                break
        else:
            merged.append(dict(item))
    return merged


def merge_containers(runtime: Mapping[str, Any], isvc: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(runtime))
    for field, value in isvc.items():
        if field == "env":
            merged["env"] = _merge_by_key(merged.get("env", []), value, "name")
        elif field == "ports":
            merged["ports"] = _merge_by_key(merged.get("ports", []), value, "containerPort")
        elif field != "args":
            merged[field] = copy.deepcopy(value)
    merged["args"] = [*runtime.get("args", []), *isvc.get("args", [])]
    return merged


def _evaluate(action: str, meta: Mapping[str, Any]) -> str:
    """One ``{{...}}`` action: a chain of fields (``.Name``) and map keys (``.Labels.app``) only."""
    match = _FIELD_CHAIN.match(action)
    if match is None:
        raise ValueError(f"template action not modelled here: {{{{{action}}}}}")
    first, _, rest = match.group(1)[1:].partition(".")
    field = {"Name": "name", "Namespace": "namespace", "Labels": "labels", "Annotations": "annotations"}.get(
        first
    )
    if field is None:
        raise ValueError(f"ObjectMeta has no field {first!r} modelled here")
    value = meta.get(field, {} if field in ("labels", "annotations") else "")
    if rest:
        if not isinstance(value, Mapping):
            raise ValueError(f"can't evaluate field {rest} in type string")
        return str(value.get(rest, GO_NO_VALUE))
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{v}" for k, v in sorted(value.items())) + "]"
    return str(value)


def replace_placeholders(container: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    text = json.dumps(container)
    return json.loads(_ACTION.sub(lambda m: _evaluate(m.group(1), meta), text))


def _wants_gpu(container: Mapping[str, Any]) -> bool:
    resources = container.get("resources", {})
    return any(
        key.endswith("/gpu") for part in ("limits", "requests") for key in resources.get(part, {}) or {}
    )


def update_image_tag(container: Mapping[str, Any], runtime_annotations: Mapping[str, str]) -> dict[str, Any]:
    result = dict(container)
    image = result.get("image", "")
    if "@sha256:" in image or not re.search(r":[\w.\-]*$", image):
        return result
    torchserve = runtime_annotations.get(SERVER_TYPE_ANNOTATION) == TORCHSERVE_SERVER_TYPE
    if torchserve and _wants_gpu(result) and not image.endswith("-gpu"):
        result["image"] = image + "-gpu"
    return result


def predictor_container(runtime: Mapping[str, Any], isvc: Mapping[str, Any]) -> dict[str, Any]:
    """The predictor container KServe renders for ``isvc`` served by the ClusterServingRuntime ``runtime``."""
    annotations = runtime.get("metadata", {}).get("annotations", {})
    defaulted = runtime_defaults(isvc, annotations)
    (runtime_container,) = [c for c in runtime["spec"]["containers"] if c["name"] == PREDICTOR_CONTAINER]
    model = defaulted["spec"]["predictor"]["model"]
    isvc_container = {k: v for k, v in model.items() if k in ("args", "env", "ports", "resources", "command")}
    merged = merge_containers(runtime_container, isvc_container)
    return update_image_tag(replace_placeholders(merged, defaulted["metadata"]), annotations)


@dataclass(frozen=True, slots=True)
class ServingPort:
    port: int
    http2: bool  # Serverless: the port is named h2c; raw: the Service port has appProtocol kubernetes.io/h2c


def serving_port(container: Mapping[str, Any], *, mode: str) -> ServingPort:
    """The container port traffic reaches in ``mode`` "Serverless" or "RawDeployment"; ``ValueError`` for
    ports Knative refuses."""
    ports = container.get("ports") or []
    if mode == "Serverless":
        if len(ports) > 1:
            raise ValueError("Knative accepts a single container port")
        if not ports:
            return ServingPort(KNATIVE_DEFAULT_PORT, http2=False)
        name = ports[0].get("name", "")
        if name not in ("", "http1", "h2c"):
            raise ValueError(f"Knative accepts only the port names http1 and h2c, not {name!r}")
        return ServingPort(int(ports[0]["containerPort"]), http2=name == "h2c")
    if mode == "RawDeployment":
        if not ports:
            return ServingPort(KSERVE_DEFAULT_HTTP_PORT, http2=False)
        name = ports[0].get("name", "")
        return ServingPort(int(ports[0]["containerPort"]), http2="grpc" in name or "h2c" in name)
    raise ValueError(f"unknown deployment mode {mode!r}")


def inference_service(
    name: str, *, protocol: str | None = None, ports: list[dict[str, Any]] | None = None, **model: Any
) -> dict[str, Any]:
    """An InferenceService with ``modelFormat: pytorch`` and a TorchServe store at its storageUri."""
    spec: dict[str, Any] = {
        "modelFormat": {"name": "pytorch"},
        "storageUri": "gs://bucket/torchserve",
        **model,
    }
    if protocol is not None:
        spec["protocolVersion"] = protocol
    if ports is not None:
        spec["ports"] = ports
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"predictor": {"model": spec}},
    }
