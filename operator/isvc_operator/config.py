"""The operator's settings, read from the `inferenceservice-config` ConfigMap (KFServing's shape).

Each data key holds a JSON document. A missing ConfigMap, a missing key, malformed JSON or a field of
the wrong type falls back to the documented default below and is reported as a problem (the operator
turns problems into Warning events), so a bad edit never stops reconciliation.
"""

from __future__ import annotations

import copy
import json
import re
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
    # The securityContext of every container of a predictor's pod (storage initializer and runtime),
    # replaced as a whole by the ConfigMap's. Restrictive, so that Knative's webhook has nothing to warn
    # about (warnDefaultContainerSecurityContext); no runAsUser, so an image's own non-root user runs.
    "securityContext": {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    },
    # KFServing's payload logger (spec.predictor.logger): the sink of an isvc that names none, and for https
    # sinks a ConfigMap (in the isvc's namespace, KServe's caBundle) whose key caCertFile holds the CA
    # certificates to verify them with, instead of the system's; "" for the system's.
    "logger": {"defaultUrl": "http://default-broker", "caBundle": "", "caCertFile": "ca.crt"},
    # KFServing's batcher (spec.predictor.batcher): the value of each field an isvc's batcher leaves unset.
    # maxLatency in ms (KFServing's agent waited up to 5000; the runtime's batcher adapts its wait to the
    # load, so TorchServe's 100 suffices), timeout in s (KFServing's 60).
    "batcher": {"maxBatchSize": 32, "maxLatency": 100, "timeout": 60},
    # How an isvc without a deploymentMode annotation is deployed (KServe's `deploy` key): "Serverless"
    # (a Knative Service) or "RawDeployment" (a Deployment, Service and HorizontalPodAutoscaler).
    "deploy": {"defaultDeploymentMode": "Serverless"},
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
SERVERLESS, RAW_DEPLOYMENT = "Serverless", "RawDeployment"
DEPLOYMENT_MODES = (SERVERLESS, RAW_DEPLOYMENT)
#: Sections a ConfigMap from before their release may lack: defaulted without a problem.
_OPTIONAL_SECTIONS = ("metrics", "securityContext", "logger", "batcher", "deploy")
#: The CRD's bounds of each batcher field (crds/: spec.predictor.batcher).
BATCHER_BOUNDS = {"maxBatchSize": (1, 1024), "maxLatency": (1, 60000), "timeout": (1, 3600)}
_MAX_ID = 2**31 - 1
_SECCOMP_TYPES = ("RuntimeDefault", "Localhost", "Unconfined")


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
class LoggerConfig:
    default_url: str = DEFAULTS["logger"]["defaultUrl"]
    ca_bundle: str = ""  # a ConfigMap name; "" verifies https sinks with the system CAs
    ca_cert_file: str = DEFAULTS["logger"]["caCertFile"]


@dataclass(frozen=True)
class BatcherConfig:
    max_batch_size: int = DEFAULTS["batcher"]["maxBatchSize"]
    max_latency_ms: int = DEFAULTS["batcher"]["maxLatency"]
    timeout_seconds: int = DEFAULTS["batcher"]["timeout"]


@dataclass(frozen=True)
class OperatorConfig:
    pytorch: PytorchConfig
    storage_initializer: StorageInitializerConfig
    ingress: IngressConfig
    metrics: MetricsConfig = MetricsConfig()
    logger: LoggerConfig = LoggerConfig()
    batcher: BatcherConfig = BatcherConfig()
    security_context: dict[str, Any] = field(
        default_factory=lambda: copy.deepcopy(DEFAULTS["securityContext"]))
    default_deployment_mode: str = SERVERLESS
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
    if key == "logger":
        _take_logger(section, given, problems)
        return section
    if key == "batcher":
        _take_batcher(section, given, problems)
        return section
    if key == "deploy":
        mode = given.get("defaultDeploymentMode", section["defaultDeploymentMode"])
        if mode in DEPLOYMENT_MODES:
            section["defaultDeploymentMode"] = mode
        else:
            problems.append(f"data.deploy.defaultDeploymentMode must be one of {', '.join(DEPLOYMENT_MODES)};"
                            f" using {section['defaultDeploymentMode']!r}")
        return section
    if key == "securityContext":
        problem = security_context_problem(given)
        if problem is None:
            return given
        problems.append(f"data.securityContext{problem}; using the defaults")
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


def _take_logger(section: dict[str, Any], given: dict[str, Any], problems: list[str]) -> None:
    checks = {
        "defaultUrl": (lambda v: isinstance(v, str) and v.startswith(("http://", "https://")) and "@" not in v
                       and len(v) > len("https://"), "an http:// or https:// URL without credentials"),
        "caBundle": (lambda v: isinstance(v, str) and (v == "" or _is_dns_subdomain(v)),
                     "a ConfigMap name or \"\""),
        "caCertFile": (lambda v: isinstance(v, str) and bool(v) and "/" not in v and v not in (".", ".."),
                       "a key of that ConfigMap"),
    }
    _take_checked(section, given, checks, "logger", problems)


def _take_batcher(section: dict[str, Any], given: dict[str, Any], problems: list[str]) -> None:
    def within(low: int, high: int):
        return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high

    checks = {name: (within(low, high), f"an integer from {low} to {high}")
              for name, (low, high) in BATCHER_BOUNDS.items()}
    _take_checked(section, given, checks, "batcher", problems)


def _take_checked(section: dict[str, Any], given: dict[str, Any], checks: dict[str, Any], key: str,
                  problems: list[str]) -> None:
    """Each known field of `given` that passes its check replaces the default; the others are reported."""
    for name, value in given.items():
        if name not in checks:
            problems.append(f"data.{key}.{name} is not a field of {key} ({', '.join(checks)}); ignored")
            continue
        valid, what = checks[name]
        if valid(value):
            section[name] = value
        else:
            problems.append(f"data.{key}.{name} must be {what}; using the default {section[name]!r}")


def _is_dns_subdomain(name: str) -> bool:
    return len(name) <= 253 and re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) is not None


def security_context_problem(context: dict[str, Any]) -> str | None:
    """Why Knative would refuse `context` as a container's securityContext, or None. Knative accepts these
    fields only (knative.dev/serving v0.42.2, pkg/apis/serving/fieldmask.go: SecurityContextMask)."""

    def flag(value: Any) -> bool:
        return isinstance(value, bool)

    def id_number(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_ID

    def names(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(item, str) and item for item in value)

    def capabilities(value: Any) -> bool:
        return isinstance(value, dict) and set(value) <= {"add", "drop"} and all(map(names, value.values()))

    def seccomp(value: Any) -> bool:
        if not isinstance(value, dict) or value.get("type") not in _SECCOMP_TYPES:
            return False
        if value["type"] != "Localhost":
            return set(value) == {"type"}
        profile = value.get("localhostProfile")
        return set(value) == {"type", "localhostProfile"} and isinstance(profile, str) and bool(profile)

    checks = {
        "runAsNonRoot": (flag, "true or false"),
        "allowPrivilegeEscalation": (flag, "true or false"),
        "readOnlyRootFilesystem": (flag, "true or false"),
        "runAsUser": (id_number, f"an integer from 0 to {_MAX_ID}"),
        "runAsGroup": (id_number, f"an integer from 0 to {_MAX_ID}"),
        "capabilities": (capabilities, "an object with lists of capability names in add and drop"),
        "seccompProfile": (seccomp, f"an object with a type of {', '.join(_SECCOMP_TYPES)} (and for"
                                    " Localhost a localhostProfile)"),
    }
    for name, value in context.items():
        if name not in checks:
            return f".{name} is not a container securityContext field Knative accepts ({', '.join(checks)})"
        valid, what = checks[name]
        if not valid(value):
            return f".{name} must be {what}"
    return None


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
    optional = {
        key: _merge_section(key, data[key], problems) if key in data else copy.deepcopy(DEFAULTS[key])
        for key in _OPTIONAL_SECTIONS
    }
    metrics, logger, batcher = optional["metrics"], optional["logger"], optional["batcher"]
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
        logger=LoggerConfig(default_url=logger["defaultUrl"], ca_bundle=logger["caBundle"],
                            ca_cert_file=logger["caCertFile"]),
        batcher=BatcherConfig(max_batch_size=batcher["maxBatchSize"], max_latency_ms=batcher["maxLatency"],
                              timeout_seconds=batcher["timeout"]),
        security_context=optional["securityContext"],
        default_deployment_mode=optional["deploy"]["defaultDeploymentMode"],
        problems=tuple(problems),
    )


def default_config() -> OperatorConfig:
    return parse_config({key: json.dumps(value) for key, value in DEFAULTS.items()})
