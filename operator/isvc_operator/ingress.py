"""The top-level host of an InferenceService (ingress mode `istio`): pure functions over plain dicts.

With `ingress.mode: istio` the operator owns one Istio VirtualService per isvc, named like it, for the
hosts `{isvc}.{ns}.{domain}` and `{isvc}.{ns}.svc.cluster.local`, routed to Knative's local gateway with
the Host header set to the predictor's host (raw deployment mode: to the predictor's Service, Host
unchanged). It is created only once the predictor is ready (before
that there is nothing to route to), and `status.url` is the top-level host once it exists. With `none`
the isvc's URL is the predictor ksvc's and no VirtualService exists (a left-over one is deleted).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .config import OperatorConfig
from .naming import ISVC_LABEL, owner_reference, predictor_service_name
from .render import render_template
from .spec import parse_metadata

VIRTUAL_SERVICE_TEMPLATE = "virtualservice.yaml.j2"
ISTIO_GROUP, ISTIO_VERSION, ISTIO_PLURAL = "networking.istio.io", "v1beta1", "virtualservices"
INGRESS_READY = "IngressReady"


def external_host(name: str, namespace: str, domain: str) -> str:
    return f"{name}.{namespace}.{domain}"


def internal_host(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc.cluster.local"


def predictor_host(isvc: dict[str, Any], ksvc: dict[str, Any] | None) -> str:
    """The predictor's cluster-local host, as Knative reports it (else as Knative names it)."""
    address = (((ksvc or {}).get("status") or {}).get("address") or {}).get("url")
    host = urlsplit(address).hostname if address else None
    metadata = parse_metadata(isvc)
    return host or internal_host(predictor_service_name(metadata.name), metadata.namespace)


def _quote(text: str) -> str:
    """Escape RE2 metacharacters (not '-', which needs no escape outside a class)."""
    return re.sub(r"([\\.^$*+?()\[\]{}|])", r"\\\1", text)


def _authority(host_pattern: str) -> str:
    """An anchored RE2 pattern for an authority (host, optional port)."""
    return f"^{host_pattern}(:\\d+)?$"


def virtual_service_context(isvc: dict[str, Any], config: OperatorConfig,
                            ksvc: dict[str, Any] | None,
                            raw_service_host: str | None = None) -> dict[str, Any]:
    """Routed to Knative's local gateway with the predictor's Host; in raw mode (`raw_service_host`, the
    predictor Service's cluster-local host) straight to that Service, Host unchanged."""
    metadata = parse_metadata(isvc)
    name, namespace = metadata.name, metadata.namespace
    ingress = config.ingress
    external = external_host(name, namespace, ingress.domain)
    local_short = _quote(f"{name}.{namespace}")
    return {
        "name": name,
        "namespace": namespace,
        "labels": {ISVC_LABEL: name},
        "owner": owner_reference(name, metadata.uid),
        "hosts": [external, internal_host(name, namespace)],
        "gateways": [ingress.ingress_gateway, ingress.local_gateway],
        "ingress_gateway": ingress.ingress_gateway,
        "local_gateway": ingress.local_gateway,
        "external_authority": _authority(_quote(external)),
        "internal_authority": _authority(f"{local_short}(\\.svc(\\.cluster\\.local)?)?"),
        "local_gateway_service": ingress.local_gateway_service,
        "destination_host": raw_service_host or ingress.local_gateway_service,
        "predictor_host": None if raw_service_host else predictor_host(isvc, ksvc),
    }


def render_virtual_service(isvc: dict[str, Any], config: OperatorConfig, ksvc: dict[str, Any] | None,
                           template_directory: Path | None = None, *,
                           raw_service_host: str | None = None) -> dict[str, Any]:
    return render_template(VIRTUAL_SERVICE_TEMPLATE,
                           virtual_service_context(isvc, config, ksvc, raw_service_host), template_directory)


def ingress_urls(isvc: dict[str, Any], config: OperatorConfig) -> tuple[str, str]:
    """`status.url` and `status.address.url` when the VirtualService routes the top-level host."""
    metadata = parse_metadata(isvc)
    name, namespace = metadata.name, metadata.namespace
    return (f"http://{external_host(name, namespace, config.ingress.domain)}",
            f"http://{internal_host(name, namespace)}")


def ingress_condition(predictor: dict[str, str], virtual_service_present: bool, host: str) -> dict[str, str]:
    """IngressReady in mode `istio`: true once the VirtualService exists, else following the predictor."""
    if virtual_service_present:
        return {"type": INGRESS_READY, "status": "True"}
    if predictor.get("status") == "True":
        return {"type": INGRESS_READY, "status": "Unknown", "reason": "VirtualServicePending",
                "message": f"the VirtualService for {host} is being created"}
    status = "False" if predictor.get("status") == "False" else "Unknown"
    return {"type": INGRESS_READY, "status": status, "reason": "PredictorNotReady",
            "message": f"the VirtualService for {host} is created once the predictor is ready"}
