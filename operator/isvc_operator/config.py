"""The operator's settings, read from the `inferenceservice-config` ConfigMap (KFServing's shape).

Each data key holds a JSON document. A missing ConfigMap, a missing key, malformed JSON or a field of
the wrong type falls back to the documented default below and is reported as a problem (the operator
turns problems into Warning events), so a bad edit never stops reconciliation.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

CONFIGMAP_NAME = "inferenceservice-config"
DEFAULT_NAMESPACE = "torch-isvc-system"

#: The documented defaults: what a fresh install's ConfigMap (deploy/) also says.
DEFAULTS: dict[str, dict[str, Any]] = {
    "predictors": {
        "pytorch": {
            "image": "torch-isvc/runtime",
            "defaultImageVersion": "0.1.0",
            "defaultGpuImageVersion": "0.1.0-gpu",
        },
    },
    "storageInitializer": {
        "image": "torch-isvc/storage-initializer:0.1.0",
        "memoryRequest": "100Mi",
        "memoryLimit": "1Gi",
        "cpuRequest": "100m",
        "cpuLimit": "1",
    },
    # "istio" (KFServing's default): a VirtualService per isvc for {isvc}.{ns}.{domain}; "none": the
    # isvc's URL is the predictor's Knative Service URL.
    # Prometheus scrape annotations on every predictor revision (an isvc's own prometheus.io/* annotations
    # win); a port other than 8082 is passed to the runtime as TS_METRICS_ADDRESS.
    "metrics": {"scrape": True, "port": 8082, "path": "/metrics"},
    "ingress": {
        "mode": "istio",
        "domain": "example.com",
        "ingressGateway": "knative-serving/knative-ingress-gateway",
        "localGateway": "knative-serving/knative-local-gateway",
        "localGatewayService": "knative-local-gateway.istio-system.svc.cluster.local",
    },
}

_STRING_FIELDS: dict[str, tuple[str, ...]] = {
    "storageInitializer": ("image", "memoryRequest", "memoryLimit", "cpuRequest", "cpuLimit"),
    "ingress": ("mode", "domain", "ingressGateway", "localGateway", "localGatewayService"),
}
_PYTORCH_FIELDS = ("image", "defaultImageVersion", "defaultGpuImageVersion")
_INGRESS_MODES = ("istio", "none")


@dataclass(frozen=True)
class PytorchConfig:
    image: str
    default_image_version: str
    default_gpu_image_version: str


@dataclass(frozen=True)
class StorageInitializerConfig:
    image: str
    memory_request: str
    memory_limit: str
    cpu_request: str
    cpu_limit: str

    def resources(self) -> dict[str, dict[str, str]]:
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


@dataclass(frozen=True)
class IngressConfig:
    mode: str
    domain: str
    ingress_gateway: str
    local_gateway: str
    local_gateway_service: str


@dataclass(frozen=True)
class MetricsConfig:
    scrape: bool = True
    port: int = 8082
    path: str = "/metrics"


@dataclass(frozen=True)
class OperatorConfig:
    pytorch: PytorchConfig
    storage_initializer: StorageInitializerConfig
    ingress: IngressConfig
    metrics: MetricsConfig = MetricsConfig()
    problems: tuple[str, ...] = field(default=(), compare=False)


def _merge_section(key: str, raw: str | None, problems: list[str]) -> dict[str, Any]:
    section = copy.deepcopy(DEFAULTS[key])
    if raw is None:
        problems.append(f"data.{key} is missing; using the defaults")
        return section
    try:
        given = json.loads(raw)
    except ValueError as exc:
        problems.append(f"data.{key} is not valid JSON ({exc.msg} at line {exc.lineno}); using the defaults")
        return section
    if not isinstance(given, dict):
        problems.append(f"data.{key} must be a JSON object; using the defaults")
        return section
    if key == "metrics":
        _take_metrics(section, given, problems)
        return section
    if key == "predictors":
        pytorch = given.get("pytorch", {})
        if not isinstance(pytorch, dict):
            problems.append("data.predictors.pytorch must be a JSON object; using the defaults")
            return section
        for name in _PYTORCH_FIELDS:
            _take_string(section["pytorch"], pytorch, name, f"data.predictors.pytorch.{name}", problems)
        return section
    for name in _STRING_FIELDS[key]:
        _take_string(section, given, name, f"data.{key}.{name}", problems)
    return section


def _take_metrics(section: dict[str, Any], given: dict[str, Any], problems: list[str]) -> None:
    checks = {
        "scrape": (lambda v: isinstance(v, bool), "true or false"),
        "port": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 < v < 65536, "a port number"),
        "path": (lambda v: isinstance(v, str) and v.startswith("/"), "a path starting with /"),
    }
    for name, (valid, what) in checks.items():
        if name not in given:
            continue
        if valid(given[name]):
            section[name] = given[name]
        else:
            problems.append(f"data.metrics.{name} must be {what}; using the default {section[name]!r}")


def _take_string(
    target: dict[str, Any], given: dict[str, Any], name: str, path: str, problems: list[str]
) -> None:
    if name not in given:
        return
    value = given[name]
    if isinstance(value, str) and value:
        target[name] = value
    else:
        problems.append(f"{path} must be a non-empty string; using the default {target[name]!r}")


def parse_config(data: dict[str, str] | None) -> OperatorConfig:
    """The operator's config from a ConfigMap's `data` (None: the ConfigMap does not exist)."""
    problems: list[str] = []
    if data is None:
        problems.append(f"ConfigMap {CONFIGMAP_NAME} not found; using the documented defaults")
        data = {key: json.dumps(value) for key, value in DEFAULTS.items()}
    predictors = _merge_section("predictors", data.get("predictors"), problems)["pytorch"]
    storage = _merge_section("storageInitializer", data.get("storageInitializer"), problems)
    ingress = _merge_section("ingress", data.get("ingress"), problems)
    # Optional (added after the first release): a ConfigMap without it gets the defaults silently.
    metrics = DEFAULTS["metrics"]
    if "metrics" in data:
        metrics = _merge_section("metrics", data["metrics"], problems)
    if ingress["mode"] not in _INGRESS_MODES:
        default_mode = DEFAULTS["ingress"]["mode"]
        modes = ", ".join(_INGRESS_MODES)
        problems.append(f"data.ingress.mode must be one of {modes}; using {default_mode!r}")
        ingress["mode"] = default_mode
    return OperatorConfig(
        pytorch=PytorchConfig(
            image=predictors["image"],
            default_image_version=predictors["defaultImageVersion"],
            default_gpu_image_version=predictors["defaultGpuImageVersion"],
        ),
        storage_initializer=StorageInitializerConfig(
            image=storage["image"],
            memory_request=storage["memoryRequest"],
            memory_limit=storage["memoryLimit"],
            cpu_request=storage["cpuRequest"],
            cpu_limit=storage["cpuLimit"],
        ),
        ingress=IngressConfig(
            mode=ingress["mode"],
            domain=ingress["domain"],
            ingress_gateway=ingress["ingressGateway"],
            local_gateway=ingress["localGateway"],
            local_gateway_service=ingress["localGatewayService"],
        ),
        metrics=MetricsConfig(scrape=metrics["scrape"], port=metrics["port"], path=metrics["path"]),
        problems=tuple(problems),
    )


def default_config() -> OperatorConfig:
    return parse_config({key: json.dumps(value) for key, value in DEFAULTS.items()})
