"""Canary rollouts as pure functions: traffic from the isvc and the live ksvc, promotion, rollback, and the
windows where KServe leaked traffic (a canary not ready yet, Knative not having observed a change)."""

from __future__ import annotations

from typing import Any

from isvc_operator.traffic import (
    TEMPLATE_HASH_ANNOTATION,
    Rollout,
    desired_traffic,
    rolled_out,
)

KSVC = "torchserve-predictor-default"
V1, V2, V3 = f"{KSVC}-00001", f"{KSVC}-00002", f"{KSVC}-00003"
FULL = [{"latestRevision": True, "percent": 100}]


def rev(n: int) -> str:
    return f"{KSVC}-{n:05d}"


def isvc(canary: int | None = None, rolled: str | None = None, previous: str | None = None,
         annotations: dict[str, str] | None = None) -> dict[str, Any]:
    predictor: dict[str, Any] = {"pytorch": {"storageUri": "gs://bucket/model"}}
    if canary is not None:
        predictor["canaryTrafficPercent"] = canary
    component = {}
    if rolled:
        component["latestRolledoutRevision"] = rolled
    if previous:
        component["previousRolledoutRevision"] = previous
    return {"metadata": {"name": "torchserve", "namespace": "ns", "annotations": annotations or {}},
            "spec": {"predictor": predictor},
            "status": {"components": {"predictor": component}} if component else {}}


def ksvc(template: str = "h1", *, generation: int = 1, observed: int | None = None,
         created: str | None = V1, ready: str | None = V1, spec_traffic: list[dict[str, Any]] | None = None,
         status_traffic: list[dict[str, Any]] | None = None, is_ready: bool | None = None) -> dict[str, Any]:
    observed = generation if observed is None else observed
    spec_traffic = FULL if spec_traffic is None else spec_traffic
    if status_traffic is None:
        status_traffic = [{**t, "revisionName": t.get("revisionName") or ready} for t in spec_traffic]
    ok = (created == ready) if is_ready is None else is_ready
    status: dict[str, Any] = {
        "observedGeneration": observed,
        "conditions": [{"type": "Ready", "status": "True" if ok else "Unknown"}],
        "traffic": status_traffic,
    }
    if created:
        status["latestCreatedRevisionName"] = created
    if ready:
        status["latestReadyRevisionName"] = ready
    return {"metadata": {"name": KSVC, "generation": generation,
                         "annotations": {TEMPLATE_HASH_ANNOTATION: template}},
            "spec": {"traffic": spec_traffic}, "status": status}


def split(percent: int, stable: str) -> list[dict[str, Any]]:
    return [{"latestRevision": True, "percent": percent},
            {"tag": "prev", "revisionName": stable, "latestRevision": False, "percent": 100 - percent}]


def test_before_anything_is_rolled_out_all_traffic_goes_to_the_latest_revision() -> None:
    assert desired_traffic(isvc(), None, "h1") == FULL
    assert desired_traffic(isvc(canary=20), None, "h1") == FULL
    assert desired_traffic(isvc(canary=20), ksvc(created=V1, ready=None), "h1") == FULL


def test_first_ready_revision_with_all_traffic_is_promoted() -> None:
    assert rolled_out({}, ksvc()) == Rollout(V1, None)


def test_promotion_shifts_latest_rolled_out_to_previous() -> None:
    live = ksvc("h2", created=V2, ready=V2)
    assert rolled_out(isvc(rolled=V1)["status"], live) == Rollout(V2, V1)


def test_canary_splits_between_latest_ready_and_last_rolled_out() -> None:
    live = ksvc("h2", generation=2, created=V2, ready=V2, spec_traffic=split(20, V1))
    assert desired_traffic(isvc(canary=20, rolled=V1), live, "h2") == split(20, V1)
    assert rolled_out(isvc(canary=20, rolled=V1)["status"], live) == Rollout(V1, None)


def test_new_template_pins_traffic_to_the_last_rolled_out_revision_until_it_is_ready() -> None:
    """The KServe window (#1968, #2040): the live ksvc still reports latest ready == last rolled out, and
    100% latest would hand the new revision everything the moment it became ready."""
    stable = ksvc("h1", created=V1, ready=V1)
    assert desired_traffic(isvc(canary=20, rolled=V1), stable, "h2") == split(0, V1)
    assert desired_traffic(isvc(rolled=V1), stable, "h2") == split(0, V1)


def test_traffic_stays_pinned_while_knative_has_not_observed_the_template_change() -> None:
    applied = ksvc("h2", generation=2, observed=1, spec_traffic=split(0, V1))
    assert desired_traffic(isvc(canary=20, rolled=V1), applied, "h2") == split(0, V1)


def test_traffic_stays_pinned_while_the_new_revision_is_not_ready() -> None:
    creating = ksvc("h2", generation=2, created=V2, ready=V1, spec_traffic=split(0, V1))
    assert desired_traffic(isvc(canary=20, rolled=V1), creating, "h2") == split(0, V1)
    assert desired_traffic(isvc(rolled=V1), creating, "h2") == split(0, V1)
    assert rolled_out(isvc(rolled=V1)["status"], creating) == Rollout(V1, None)


def test_a_failed_canary_never_receives_traffic() -> None:
    failed = ksvc("h2", generation=2, created=V2, ready=V1, spec_traffic=split(0, V1), is_ready=False)
    assert desired_traffic(isvc(canary=50, rolled=V1), failed, "h2") == split(0, V1)


def test_traffic_only_change_is_kept_while_knative_catches_up() -> None:
    """No flapping: a split applied from a settled state is not pinned again before Knative observes it."""
    applied = ksvc("h2", generation=3, observed=2, created=V2, ready=V2, spec_traffic=split(50, V1))
    assert desired_traffic(isvc(canary=50, rolled=V1), applied, "h2") == split(50, V1)


def test_canary_rollback_restores_previous_revision() -> None:
    live = ksvc("h3", generation=4, created=V3, ready=V3, spec_traffic=split(30, V2))
    assert desired_traffic(isvc(canary=0, rolled=V2, previous=V1), live, "h3") == split(0, V2)


def test_removing_the_canary_percent_sends_all_to_latest_and_promotes_it() -> None:
    live = ksvc("h3", generation=5, created=V3, ready=V3, spec_traffic=split(0, V2))
    assert desired_traffic(isvc(rolled=V2, previous=V1), live, "h3") == FULL
    assert desired_traffic(isvc(canary=100, rolled=V2, previous=V1), live, "h3") == FULL
    served = ksvc("h3", generation=6, created=V3, ready=V3, spec_traffic=FULL)
    assert rolled_out(isvc(rolled=V2, previous=V1)["status"], served) == Rollout(V3, V2)


def test_canary_percent_with_nothing_new_keeps_all_traffic_on_the_latest() -> None:
    live = ksvc("h2", generation=2, created=V2, ready=V2)
    assert desired_traffic(isvc(canary=20, rolled=V2, previous=V1), live, "h2") == FULL


def test_no_promotion_from_a_stale_or_split_status() -> None:
    stale = ksvc("h2", generation=3, observed=2, created=V2, ready=V2)
    assert rolled_out(isvc(rolled=V1)["status"], stale) == Rollout(V1, None)
    at_canary = ksvc("h2", generation=2, created=V2, ready=V2, spec_traffic=split(20, V1))
    assert rolled_out(isvc(rolled=V1)["status"], at_canary) == Rollout(V1, None)


def test_revert_to_an_older_template_does_not_hand_the_rolled_back_canary_all_traffic() -> None:
    """kserve#2130: after a rollback the latest ready revision is the rejected canary; a new template
    (with or without a canary percent) must not route to it while its own revision is being created."""
    rolled_back = ksvc("h3", generation=4, created=V3, ready=V3, spec_traffic=split(0, V2))
    for canary in (None, 10):
        assert desired_traffic(isvc(canary=canary, rolled=V2, previous=V1), rolled_back, "h2") == split(0, V2)


def test_tag_routing_annotation_tags_the_latest_target() -> None:
    tagged = {"serving.kubeflow.org/enable-tag-routing": "true"}
    live = ksvc("h2", generation=2, created=V2, ready=V2, spec_traffic=split(20, V1))
    assert desired_traffic(isvc(canary=20, rolled=V1, annotations=tagged), live, "h2") == [
        {"latestRevision": True, "percent": 20, "tag": "latest"},
        {"tag": "prev", "revisionName": V1, "latestRevision": False, "percent": 80}]
    assert desired_traffic(isvc(annotations=tagged), None, "h1") == [
        {"latestRevision": True, "percent": 100, "tag": "latest"}]
