"""The InferenceService's status, computed from its predictor's Knative Service: pure functions.

Conditions follow Knative's conventions: `PredictorReady` mirrors the ksvc's Ready condition,
`IngressReady` says whether the isvc's URL routes to it, `Ready` is true only when both are.
A condition keeps its lastTransitionTime while its status does not change, so recomputing the status
of an unchanged object yields an identical dict (and the operator writes nothing).
"""

from __future__ import annotations

from typing import Any

from .traffic import Rollout, rolled_out

PREDICTOR_READY = "PredictorReady"
INGRESS_READY = "IngressReady"
READY = "Ready"
TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


def _condition(type_: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    condition = {"type": type_, "status": status}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def _ksvc_ready(ksvc: dict[str, Any]) -> dict[str, Any] | None:
    for condition in (ksvc.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition
    return None


def predictor_condition(ksvc: dict[str, Any] | None, render_error: str | None = None) -> dict[str, str]:
    if render_error is not None:
        return _condition(PREDICTOR_READY, FALSE, "RenderFailed", render_error)
    if ksvc is None:
        return _condition(PREDICTOR_READY, UNKNOWN, "PredictorServiceMissing",
                          "the predictor's Knative Service does not exist yet")
    status = ksvc.get("status") or {}
    generation = (ksvc.get("metadata") or {}).get("generation")
    if generation is not None and status.get("observedGeneration") != generation:
        return _condition(PREDICTOR_READY, UNKNOWN, "PredictorReconciling",
                          "Knative has not yet observed the latest predictor spec")
    ready = _ksvc_ready(ksvc)
    if ready is None:
        return _condition(PREDICTOR_READY, UNKNOWN, "PredictorReconciling",
                          "the predictor's Knative Service reports no Ready condition yet")
    status_value = ready.get("status") if ready.get("status") in (TRUE, FALSE) else UNKNOWN
    return _condition(PREDICTOR_READY, status_value, ready.get("reason", ""), ready.get("message", ""))


def ingress_condition(predictor: dict[str, str], ingress: dict[str, str] | None = None) -> dict[str, str]:
    """Without an ingress of our own (mode `none`), the isvc's URL is the ksvc's: ready with it.

    `ingress` is the condition computed by an ingress reconciler (mode `istio`), passed through.
    """
    if ingress is not None:
        return {**ingress, "type": INGRESS_READY}
    if predictor["status"] == TRUE:
        return _condition(INGRESS_READY, TRUE)
    return _condition(INGRESS_READY, predictor["status"], "PredictorNotReady",
                      "the URL routes to the predictor, which is not ready")


def ready_condition(parts: list[dict[str, str]]) -> dict[str, str]:
    not_ready = [part for part in parts if part["status"] != TRUE]
    if not not_ready:
        return _condition(READY, TRUE)
    status = FALSE if any(part["status"] == FALSE for part in not_ready) else UNKNOWN
    first = next(part for part in not_ready if part["status"] == status)
    return _condition(READY, status, first.get("reason", f"{first['type']}False"),
                      first.get("message", f"{first['type']} is {first['status']}"))


def _with_transition_times(
    conditions: list[dict[str, str]], previous: list[dict[str, Any]], now: str
) -> list[dict[str, str]]:
    before = {condition.get("type"): condition for condition in previous}
    stamped = []
    for condition in conditions:
        old = before.get(condition["type"])
        if old is not None and old.get("status") == condition["status"] and old.get("lastTransitionTime"):
            stamped.append({**condition, "lastTransitionTime": old["lastTransitionTime"]})
        else:
            stamped.append({**condition, "lastTransitionTime": now})
    return stamped


def predictor_component(ksvc: dict[str, Any] | None, rollout: Rollout | None = None) -> dict[str, Any]:
    """`components.predictor`: the ksvc's URLs, revisions and traffic (a mirror of what Knative routes),
    plus the rolled-out revisions, which are carried over and only ever advanced by a promotion."""
    status = (ksvc or {}).get("status") or {}
    component: dict[str, Any] = {}
    if rollout is not None and rollout.latest:
        component["latestRolledoutRevision"] = rollout.latest
    if rollout is not None and rollout.previous:
        component["previousRolledoutRevision"] = rollout.previous
    if status.get("url"):
        component["url"] = status["url"]
    if (status.get("address") or {}).get("url"):
        component["address"] = {"url": status["address"]["url"]}
    for key in ("latestCreatedRevisionName", "latestReadyRevisionName"):
        if status.get(key):
            component[key.removesuffix("Name")] = status[key]
    if status.get("traffic"):
        component["traffic"] = [dict(target) for target in status["traffic"]]
    return component


def propagate_status(
    isvc: dict[str, Any],
    ksvc: dict[str, Any] | None,
    now: str,
    *,
    render_error: str | None = None,
    ingress: dict[str, str] | None = None,
    ingress_urls: tuple[str, str] | None = None,
    rollout: Rollout | None = None,
) -> dict[str, Any]:
    """The isvc's full status from its ksvc (None: not created yet); `now` stamps new transitions.

    `ingress` is the IngressReady condition of an ingress the operator owns (mode `istio`); then the
    URLs are `ingress_urls` (the top-level host) once it routes, and absent before. Without `ingress`
    the URLs are the ksvc's. `rollout` defaults to `rolled_out` of the stored status and the ksvc.
    """
    previous = isvc.get("status") or {}
    if rollout is None:
        rollout = rolled_out(previous, ksvc)
    predictor = predictor_condition(ksvc, render_error)
    ingress_ready = ingress_condition(predictor, ingress)
    conditions = [ingress_ready, predictor, ready_condition([predictor, ingress_ready])]
    conditions.sort(key=lambda condition: condition["type"])
    status: dict[str, Any] = {
        "observedGeneration": isvc["metadata"].get("generation", 0),
        "conditions": _with_transition_times(conditions, previous.get("conditions") or [], now),
    }
    component = predictor_component(ksvc, rollout)
    if component:
        status["components"] = {"predictor": component}
    if ingress is not None:
        if ingress_urls is not None:
            status["url"], status["address"] = ingress_urls[0], {"url": ingress_urls[1]}
        return status
    if component.get("url"):
        status["url"] = component["url"]
    if component.get("address"):
        status["address"] = dict(component["address"])
    return status


def ready_status(status: dict[str, Any] | None) -> str | None:
    for condition in (status or {}).get("conditions") or []:
        if condition.get("type") == READY:
            return condition.get("status")
    return None


def ready_transition(old: dict[str, Any] | None, new: dict[str, Any]) -> tuple[str, str, str] | None:
    """The event (type, reason, message) to post when the Ready condition changes, else None."""
    before, after = ready_status(old), ready_status(new)
    if before == after:
        return None
    condition = next(c for c in new["conditions"] if c["type"] == READY)
    if after == TRUE:
        return "Normal", "InferenceServiceReady", f"InferenceService is ready at {new.get('url', '(no URL)')}"
    if before == TRUE:
        return "Warning", "InferenceServiceNotReady", f"{condition.get('reason')}: {condition.get('message')}"
    return None
