"""The objects that install Knative Serving's admission webhook and the real CRDs, read from Knative's and
Istio's own files (``e2e.knative.sources``); only what must differ here is generated.

From ``knative.dev/serving``'s ``config/core/`` (as Knative's release YAML installs them):
- ``300-resources/``: the CRDs (Service, Configuration, Revision, Route, DomainMapping, Metric,
  PodAutoscaler);
- ``100-namespace.yaml``, ``200-serviceaccount.yaml``, ``200-roles/``: the namespace, the ``controller``
  ServiceAccount the webhook runs as, and its RBAC;
- ``configmaps/``: every config map the webhook watches, ``config-features`` with the two flags the README
  tells users to enable (the pod template has an init container and an emptyDir);
- ``webhooks/``: the ``webhook-certs`` Secret (Knative fills it) and the three webhook configurations (Knative
  fills their ``caBundle`` and rules).

Generated: the ``webhook`` Service is Knative's own (``deployments/webhook.yaml``) without its selector (no
kubelet runs a pod for it here), and an EndpointSlice points its port at the webhook's network namespace.
From ``istio.io/api``'s ``kubernetes/customresourcedefinitions.gen.yaml``: the VirtualService CRD.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]
SYSTEM_NAMESPACE = "knative-serving"
WEBHOOK_SERVICE = "webhook"
WEBHOOK_CONFIGURATIONS = ("webhooks/defaulting.yaml", "webhooks/resource-validation.yaml",
                          "webhooks/configmap-validation.yaml")
# The README's install section enables these: the predictor's pod template has both.
FEATURE_FLAGS = {"kubernetes.podspec-init-containers": "enabled",
                 "kubernetes.podspec-volumes-emptydir": "enabled"}
ISTIO_KINDS = ("VirtualService",)  # the operator writes no Gateway: Knative's gateways are named, not made


@functools.cache
def _parsed(path: Path) -> tuple[Manifest, ...]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: Istio's CRD file is 19k lines
    return tuple(doc for doc in yaml.load_all(path.read_text(), Loader=loader) if doc)


def documents(path: Path) -> list[Manifest]:
    """Every non-empty YAML document of one file (the module cache is read-only: parsed once, copied out)."""
    return copy.deepcopy(list(_parsed(path)))


def _files(core: Path, *patterns: str) -> Iterator[Path]:
    for pattern in patterns:
        found = sorted(core.glob(pattern))
        if not found:
            raise FileNotFoundError(f"{core / pattern}: no such file in Knative's config/core")
        yield from found


def _from(core: Path, *patterns: str) -> list[Manifest]:
    return [doc for path in _files(core, *patterns) for doc in documents(path)]


def serving_crds(serving: Path) -> list[Manifest]:
    """Knative Serving's CRDs, as ``config/core/300-resources/`` defines them."""
    crds = _from(serving / "config" / "core", "300-resources/*.yaml")
    assert all(doc["kind"] == "CustomResourceDefinition" for doc in crds), "300-resources holds only CRDs"
    return crds


def istio_crds(istio_api: Path, kinds: Iterable[str] = ISTIO_KINDS) -> list[Manifest]:
    """Istio's CRDs of ``kinds`` from istio.io/api's generated CRD file."""
    wanted = set(kinds)
    found = [doc for doc in documents(istio_api / "kubernetes" / "customresourcedefinitions.gen.yaml")
             if doc.get("kind") == "CustomResourceDefinition" and doc["spec"]["names"]["kind"] in wanted]
    missing = wanted - {doc["spec"]["names"]["kind"] for doc in found}
    if missing:
        raise LookupError(f"istio.io/api defines no CRD of kind {sorted(missing)}")
    return found


def with_features(configmap: Manifest, flags: dict[str, str] = FEATURE_FLAGS) -> Manifest:
    """``config-features`` with ``flags`` set (Knative's example block and other keys kept)."""
    enabled = copy.deepcopy(configmap)
    enabled["data"] = {**(enabled.get("data") or {}), **flags}
    return enabled


def webhook_prerequisites(serving: Path) -> list[Manifest]:
    """Namespace, ServiceAccount, RBAC, config maps and the certificate Secret, in install order: all the
    webhook reads or writes before it can serve."""
    core = serving / "config" / "core"
    configmaps = [with_features(doc) if doc["metadata"]["name"] == "config-features" else doc
                  for doc in _from(core, "configmaps/*.yaml")]
    return [*_from(core, "100-namespace.yaml", "200-serviceaccount.yaml", "200-roles/*.yaml"), *configmaps,
            *_from(core, "webhooks/secret.yaml")]


def webhook_configurations(serving: Path) -> list[Manifest]:
    """The mutating and validating webhook configurations (installed once the webhook can answer them)."""
    return _from(serving / "config" / "core", *WEBHOOK_CONFIGURATIONS)


def webhook_deployment(serving: Path) -> tuple[Manifest, Manifest]:
    """Knative's webhook Deployment and Service from ``deployments/webhook.yaml``."""
    docs = {doc["kind"]: doc for doc in _from(serving / "config" / "core", "deployments/webhook.yaml")}
    return docs["Deployment"], docs["Service"]


def webhook_environment(deployment: Manifest, pod_name: str) -> dict[str, str]:
    """The webhook container's environment as the kubelet would give it: literal values, and the two
    downward-API fields Knative reads (``metadata.name`` and ``metadata.namespace``)."""
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    fields = {"metadata.name": pod_name, "metadata.namespace": deployment["metadata"]["namespace"]}
    env: dict[str, str] = {}
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = str(var["value"])
        else:
            env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def webhook_port(service: Manifest) -> tuple[str, int]:
    """(name, target port) of the Service port the apiserver calls: the one named for HTTPS."""
    [port] = [port for port in service["spec"]["ports"] if port["name"].startswith("https")]
    return port["name"], int(port["targetPort"])


def selectorless_service(service: Manifest) -> Manifest:
    """Knative's webhook Service without its pod selector: its endpoints are ours to write."""
    service = copy.deepcopy(service)
    service["spec"].pop("selector", None)
    return service


def endpoint_slice(service: Manifest, address: str) -> Manifest:
    """An EndpointSlice of ``service`` with one ready endpoint at ``address`` on its HTTPS port. With
    ``--enable-aggregator-routing`` the apiserver resolves the webhook's Service through its slices
    (k8s.io/apiserver pkg/util/proxy ResolveEndpoint: the slice port must carry the Service port's name)."""
    name, port = webhook_port(service)
    meta = service["metadata"]
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{meta['name']}-netns", "namespace": meta["namespace"],
                     "labels": {"kubernetes.io/service-name": meta["name"],
                                "endpointslice.kubernetes.io/managed-by": "torch-isvc-e2e"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": [{"name": name, "port": port, "protocol": "TCP"}],
    }
