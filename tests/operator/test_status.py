"""The isvc's status from its ksvc: conditions, URLs, components, observedGeneration, Ready events."""

from __future__ import annotations

import copy
from typing import Any

from isvc_operator.status import propagate_status, ready_transition

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"
URL = "http://torchserve-predictor-default.kfserving-test.example.com"
ADDRESS = {"url": "http://torchserve-predictor-default.kfserving-test.svc.cluster.local"}
REVISION = "torchserve-predictor-default-00001"
TRAFFIC = [{"revisionName": REVISION, "latestRevision": True, "percent": 100}]


def ksvc(ready: str = "True", *, generation: int = 1, observed: int = 1, reason: str = "",
         message: str = "") -> dict[str, Any]:
    condition = {"type": "Ready", "status": ready}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return {
        "metadata": {"name": "torchserve-predictor-default", "generation": generation},
        "status": {
            "observedGeneration": observed,
            "conditions": [{"type": "ConfigurationsReady", "status": ready}, condition],
            "url": URL,
            "address": ADDRESS,
            "latestCreatedRevisionName": REVISION,
            "latestReadyRevisionName": REVISION,
            "traffic": TRAFFIC,
        },
    }


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {condition["type"]: condition for condition in status["conditions"]}


def test_ready_ksvc_makes_the_isvc_ready_with_its_urls(torchserve) -> None:
    status = propagate_status(torchserve, ksvc(), T0)
    assert {name: c["status"] for name, c in conditions(status).items()} == {
        "IngressReady": "True", "PredictorReady": "True", "Ready": "True"}
    assert status["url"] == URL
    assert status["address"] == ADDRESS
    assert status["components"]["predictor"] == {
        "latestRolledoutRevision": REVISION, "url": URL, "address": ADDRESS,
        "latestCreatedRevision": REVISION, "latestReadyRevision": REVISION, "traffic": TRAFFIC,
    }
    assert status["observedGeneration"] == 1


def test_conditions_are_sorted_by_type_and_stamped(torchserve) -> None:
    status = propagate_status(torchserve, ksvc(), T0)
    assert [c["type"] for c in status["conditions"]] == ["IngressReady", "PredictorReady", "Ready"]
    assert all(c["lastTransitionTime"] == T0 for c in status["conditions"])


def test_failed_ksvc_carries_reason_and_message_to_predictor_and_ready(torchserve) -> None:
    status = propagate_status(torchserve, ksvc("False", reason="RevisionFailed",
                                               message="Revision failed: image pull"), T0)
    by_type = conditions(status)
    assert by_type["PredictorReady"]["reason"] == "RevisionFailed"
    assert by_type["Ready"] == {"type": "Ready", "status": "False", "reason": "RevisionFailed",
                                "message": "Revision failed: image pull", "lastTransitionTime": T0}
    assert by_type["IngressReady"]["status"] == "False"


def test_missing_ksvc_leaves_the_isvc_unknown_without_url(torchserve) -> None:
    status = propagate_status(torchserve, None, T0)
    assert conditions(status)["PredictorReady"]["reason"] == "PredictorServiceMissing"
    assert conditions(status)["Ready"]["status"] == "Unknown"
    assert "url" not in status and "components" not in status


def test_stale_ksvc_status_is_not_trusted_as_ready(torchserve) -> None:
    status = propagate_status(torchserve, ksvc("True", generation=2, observed=1), T0)
    assert conditions(status)["PredictorReady"]["status"] == "Unknown"
    assert conditions(status)["PredictorReady"]["reason"] == "PredictorReconciling"


def test_render_error_marks_predictor_false_and_keeps_serving_urls(torchserve) -> None:
    status = propagate_status(torchserve, ksvc(), T0, render_error="template failed")
    assert conditions(status)["PredictorReady"] == {
        "type": "PredictorReady", "status": "False", "reason": "RenderFailed", "message": "template failed",
        "lastTransitionTime": T0}
    assert status["url"].startswith("http://torchserve-predictor-default")


def test_observed_generation_follows_the_isvc(torchserve) -> None:
    torchserve["metadata"]["generation"] = 7
    assert propagate_status(torchserve, ksvc(), T0)["observedGeneration"] == 7


def test_recomputing_an_unchanged_status_is_identical(torchserve) -> None:
    first = propagate_status(torchserve, ksvc(), T0)
    torchserve["status"] = copy.deepcopy(first)
    assert propagate_status(torchserve, ksvc(), T1) == first


def test_transition_time_moves_only_for_conditions_that_changed(torchserve) -> None:
    torchserve["status"] = propagate_status(torchserve, ksvc("Unknown"), T0)
    after = conditions(propagate_status(torchserve, ksvc("True"), T1))
    assert after["Ready"]["lastTransitionTime"] == T1
    torchserve["status"] = propagate_status(torchserve, ksvc("True"), T1)
    again = conditions(propagate_status(torchserve, ksvc("True", generation=2, observed=2), "later"))
    assert again["Ready"]["lastTransitionTime"] == T1


def test_istio_ingress_condition_is_passed_through(torchserve) -> None:
    pending = {"type": "IngressReady", "status": "False", "reason": "VirtualServiceNotReady"}
    status = propagate_status(torchserve, ksvc(), T0, ingress=pending)
    assert conditions(status)["IngressReady"]["reason"] == "VirtualServiceNotReady"
    assert conditions(status)["Ready"]["status"] == "False"


def test_becoming_ready_posts_a_normal_event_with_the_url(torchserve) -> None:
    old = propagate_status(torchserve, ksvc("Unknown"), T0)
    new = propagate_status(torchserve, ksvc("True"), T1)
    kind, reason, message = ready_transition(old, new)
    assert (kind, reason) == ("Normal", "InferenceServiceReady")
    assert "http://torchserve-predictor-default.kfserving-test.example.com" in message


def test_losing_readiness_posts_a_warning_with_the_reason(torchserve) -> None:
    old = propagate_status(torchserve, ksvc("True"), T0)
    new = propagate_status(torchserve, ksvc("False", reason="RevisionFailed", message="crash"), T1)
    assert ready_transition(old, new) == ("Warning", "InferenceServiceNotReady", "RevisionFailed: crash")


def test_unchanged_readiness_posts_nothing(torchserve) -> None:
    status = propagate_status(torchserve, ksvc("True"), T0)
    assert ready_transition(status, status) is None
    assert ready_transition(None, propagate_status(torchserve, None, T0)) is None


def test_istio_urls_are_the_top_level_host_once_the_virtualservice_exists(torchserve) -> None:
    routed = {"type": "IngressReady", "status": "True"}
    urls = ("http://torchserve.kfserving-test.example.com", "http://torchserve.kfserving-test.svc.cluster.local")
    status = propagate_status(torchserve, ksvc(), T0, ingress=routed, ingress_urls=urls)
    assert status["url"] == "http://torchserve.kfserving-test.example.com"
    assert status["address"] == {"url": "http://torchserve.kfserving-test.svc.cluster.local"}
    assert status["components"]["predictor"]["url"].startswith("http://torchserve-predictor-default.")
    pending = {"type": "IngressReady", "status": "Unknown", "reason": "VirtualServicePending"}
    before = propagate_status(torchserve, ksvc(), T0, ingress=pending)
    assert "url" not in before and "address" not in before


def test_rolled_out_revisions_survive_a_missing_or_stale_ksvc(torchserve) -> None:
    torchserve["status"] = {"components": {"predictor": {
        "latestRolledoutRevision": "torchserve-predictor-default-00002",
        "previousRolledoutRevision": "torchserve-predictor-default-00001"}}}
    for live in (None, ksvc("Unknown"), ksvc("True", generation=3, observed=2)):
        component = propagate_status(torchserve, live, T0)["components"]["predictor"]
        assert component["latestRolledoutRevision"] == "torchserve-predictor-default-00002"
        assert component["previousRolledoutRevision"] == "torchserve-predictor-default-00001"
