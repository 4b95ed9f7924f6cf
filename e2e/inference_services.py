"""An InferenceService and the Knative Service the operator renders for it, read back through kubectl (for the
e2e tests and the demo): the objects, their conditions, readiness for the current generation."""

from __future__ import annotations

import json
from typing import Any

from e2e.localkube import Kubectl

KNATIVE_SERVICES = "services.serving.knative.dev"


def predictor_service(isvc: str = "torchserve") -> str:
    """The name of an isvc's Knative Service."""
    return f"{isvc}-predictor-default"


KSVC = predictor_service()  # of the examples' isvc, torchserve


def isvc_of(kubectl: Kubectl, namespace: str, name: str = "torchserve") -> dict[str, Any] | None:
    return kubectl.get("-n", namespace, "isvc", name)


def ksvc_of(kubectl: Kubectl, namespace: str, name: str = KSVC) -> dict[str, Any] | None:
    return kubectl.get("-n", namespace, KNATIVE_SERVICES, name)


def knative_defaulted(kubectl: Kubectl, ksvc: dict[str, Any]) -> dict[str, Any]:
    """``ksvc`` as the cluster would store it: defaulted by Knative's webhook (a server-side dry run, under
    another name so that it cannot collide with the real one)."""
    probe = {**ksvc, "metadata": {**ksvc["metadata"], "name": f"{ksvc['metadata']['name']}-golden"}}
    done = kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(probe))
    return json.loads(done.stdout)


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    """The status condition of type ``kind`` ({} when there is none)."""
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item["type"] == kind:
            return item
    return {}


def predictor_status(isvc: dict[str, Any] | None) -> dict[str, Any]:
    """``status.components.predictor`` ({} when not written yet)."""
    return (((isvc or {}).get("status") or {}).get("components") or {}).get("predictor") or {}


def ready_isvc(kubectl: Kubectl, namespace: str, name: str = "torchserve") -> dict[str, Any] | None:
    """The isvc once it is Ready for its current generation, else None."""
    isvc = isvc_of(kubectl, namespace, name)
    if condition(isvc, "Ready").get("status") != "True":
        return None
    return isvc if isvc["status"].get("observedGeneration") == isvc["metadata"]["generation"] else None
