"""The InferenceService's status, computed from its predictor's Knative Service (or, in raw deployment
mode, its Deployment and Pods): pure functions.

Conditions follow Knative's conventions: `PredictorReady` mirrors the ksvc's Ready condition (raw mode:
the Deployment's availability, or the termination message of a pod's failing container),
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


def _status_condition(body: dict[str, Any], type_: str) -> dict[str, Any] | None:
    """The condition `type_` of an object's status (a ksvc's, a Deployment's)."""
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_:
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
    ready = _status_condition(ksvc, "Ready")
    if ready is None:
        return _condition(PREDICTOR_READY, UNKNOWN, "PredictorReconciling",
                          "the predictor's Knative Service reports no Ready condition yet")
    status_value = ready.get("status") if ready.get("status") in (TRUE, FALSE) else UNKNOWN
    return _condition(PREDICTOR_READY, status_value, ready.get("reason", ""), ready.get("message", ""))


def pod_failure(pod: dict[str, Any]) -> dict[str, str] | None:
    """A container of the pod that terminated with an error (now, or before its restart): which, and its
    termination message, as the kubelet reports it; None when none did. Init containers come first: a bad
    storageUri fails the storage initializer before the runtime starts."""
    status = pod.get("status") or {}
    for kind in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(kind) or []:
            state = container.get("state") or {}
            terminated = state.get("terminated")
            if terminated is None and "waiting" in state:
                terminated = (container.get("lastState") or {}).get("terminated")
            if terminated and terminated.get("exitCode", 0) != 0:
                message = (terminated.get("message") or "").strip() or terminated.get("reason") or "Error"
                return {"container": str(container.get("name", "")),
                        "reason": terminated.get("reason") or "Error", "message": message,
                        "exitCode": str(terminated.get("exitCode"))}
    return None


def raw_predictor_condition(deployment: dict[str, Any] | None, failures: list[dict[str, str]],
                            render_error: str | None = None) -> dict[str, str]:
    """PredictorReady in raw mode, from the Deployment and the failures of its pods (`pod_failure`)."""
    if render_error is not None:
        return _condition(PREDICTOR_READY, FALSE, "RenderFailed", render_error)
    if deployment is None:
        return _condition(PREDICTOR_READY, UNKNOWN, "PredictorDeploymentMissing",
                          "the predictor's Deployment does not exist yet")
    status = deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation")
    available = _status_condition(deployment, "Available") or {}
    if available.get("status") == TRUE and (status.get("readyReplicas") or 0) > 0 and not failures \
            and (generation is None or status.get("observedGeneration") == generation):
        return _condition(PREDICTOR_READY, TRUE)
    if failures:
        failure = failures[0]
        return _condition(PREDICTOR_READY, FALSE, "ContainerFailed",
                          f"container {failure['container']} terminated ({failure['reason']}, exit code"
                          f" {failure['exitCode']}): {failure['message']}")
    progressing = _status_condition(deployment, "Progressing") or {}
    if progressing.get("status") == FALSE:
        return _condition(PREDICTOR_READY, FALSE, progressing.get("reason", "ProgressFailed"),
                          progressing.get("message", ""))
    if generation is not None and status.get("observedGeneration") != generation:
        return _condition(PREDICTOR_READY, UNKNOWN, "PredictorReconciling",
                          "the Deployment controller has not yet observed the latest predictor spec")
    return _condition(PREDICTOR_READY, UNKNOWN, "PredictorNotReady",
                      f"{status.get('readyReplicas') or 0} of {status.get('replicas') or 0} replicas ready")


def raw_predictor_component(service_host: str, deployment: dict[str, Any] | None) -> dict[str, Any]:
    """`components.predictor` in raw mode: the Service's cluster-local URL once the Deployment exists."""
    if deployment is None:
        return {}
    url = f"http://{service_host}"
    return {"url": url, "address": {"url": url}}


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
    predictor: dict[str, str] | None = None,
    component: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The isvc's full status from its ksvc (None: not created yet); `now` stamps new transitions.

    In raw mode `predictor` and `component` (raw_predictor_condition, raw_predictor_component) replace
    what the ksvc would say.

    `ingress` is the IngressReady condition of an ingress the operator owns (mode `istio`); then the
    URLs are `ingress_urls` (the top-level host) once it routes, and absent before. Without `ingress`
    the URLs are the ksvc's. `rollout` defaults to `rolled_out` of the stored status and the ksvc.
    """
    previous = isvc.get("status") or {}
    if rollout is None:
        rollout = rolled_out(previous, ksvc)
    if predictor is None:
        predictor = predictor_condition(ksvc, render_error)
    ingress_ready = ingress_condition(predictor, ingress)
    conditions = [ingress_ready, predictor, ready_condition([predictor, ingress_ready])]
    conditions.sort(key=lambda condition: condition["type"])
    status: dict[str, Any] = {
        "observedGeneration": isvc["metadata"].get("generation", 0),
        "conditions": _with_transition_times(conditions, previous.get("conditions") or [], now),
    }
    if component is None:
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
