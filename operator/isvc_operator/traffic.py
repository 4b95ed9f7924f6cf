"""Canary rollouts: the traffic block of the predictor's Knative Service and the rolled-out revisions.

KFServing's semantics, with the windows that made KServe leak traffic closed (kserve#1968, #2040,
#2097, #2130):

- The last rolled-out revision R is `status.components.predictor.latestRolledoutRevision` of the isvc.
  A revision is rolled out (promoted) when Knative reports, for the ksvc generation it has observed,
  that the latest ready revision L is also the latest created one and receives 100% through the
  `latestRevision` target. Promotion moves R to `previousRolledoutRevision` and L to R. It is computed
  from observed facts only (`rolled_out`), never undone, and persisted before any traffic that depends
  on it is applied.
- The canary is always addressed as `latestRevision: true`, so the operator never has to name a revision
  that does not exist yet: Knative names revisions `{ksvc}-{configuration generation:05d}` when it
  creates them, and `latestRevision` resolves to the latest *ready* one. Only R, which exists and was
  ready, is ever named (`tag: prev`).
- While a new revision is pending (the template is about to change, Knative has not reported the
  revision of the current template ready yet, or has not observed the last change), `latestRevision`
  still resolves to an older revision, possibly a canary that was rolled back. In that window the
  traffic is pinned: `[{latestRevision: true, percent: 0}, {tag: prev, revisionName: R, percent: 100}]`,
  so nothing but the last rolled-out revision serves until the new revision is ready. Whether the
  template is about to change is decided by a hash of the rendered revision template, kept in an
  annotation on the ksvc (Knative's defaulting of the template cannot disturb it).
- Once the latest revision is settled: canary P (1-99) with L != R splits P / 100-P between latest and
  R; P = 0 is a rollback (everything on R); no P (or 100) sends 100% to the latest, which then gets
  promoted. Before anything was rolled out, 100% goes to the latest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

TEMPLATE_HASH_ANNOTATION = "serving.kubeflow.org/predictor-template-hash"
TAG_ROUTING_ANNOTATION = "serving.kubeflow.org/enable-tag-routing"
PREV_TAG = "prev"
LATEST_TAG = "latest"


@dataclass(frozen=True)
class Rollout:
    """The revisions that served 100% of the traffic: the last one and the one before it."""

    latest: str | None = None
    previous: str | None = None


def template_hash(template: dict[str, Any]) -> str:
    """A stable digest of a rendered revision template (the ksvc's spec.template)."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _status(ksvc: dict[str, Any] | None) -> dict[str, Any]:
    return (ksvc or {}).get("status") or {}


def observed(ksvc: dict[str, Any] | None) -> bool:
    """Knative has reconciled the ksvc's current generation (its status describes the current spec)."""
    if ksvc is None:
        return False
    generation = (ksvc.get("metadata") or {}).get("generation")
    return generation is not None and _status(ksvc).get("observedGeneration") == generation


def _ksvc_ready(ksvc: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in _status(ksvc).get("conditions") or [])


def stored_rollout(isvc_status: dict[str, Any] | None) -> Rollout:
    component = (((isvc_status or {}).get("components") or {}).get("predictor")) or {}
    return Rollout(component.get("latestRolledoutRevision") or None,
                   component.get("previousRolledoutRevision") or None)


def rolled_out(isvc_status: dict[str, Any] | None, ksvc: dict[str, Any] | None) -> Rollout:
    """The rollout state after what the ksvc reports: the stored one, promoted if L now has 100%."""
    stored = stored_rollout(isvc_status)
    if ksvc is None or not observed(ksvc) or not _ksvc_ready(ksvc):
        return stored
    status = _status(ksvc)
    latest_ready = status.get("latestReadyRevisionName")
    if not latest_ready or status.get("latestCreatedRevisionName") != latest_ready:
        return stored
    full = any(target.get("latestRevision") and target.get("percent") == 100
               and target.get("revisionName") == latest_ready for target in status.get("traffic") or [])
    if not full or latest_ready == stored.latest:
        return stored
    return Rollout(latest_ready, stored.latest)


def pinned_traffic(rolled_out_revision: str, tag_latest: bool = False) -> list[dict[str, Any]]:
    return split_traffic(0, rolled_out_revision, tag_latest)


def split_traffic(percent: int, rolled_out_revision: str, tag_latest: bool = False) -> list[dict[str, Any]]:
    latest: dict[str, Any] = {"latestRevision": True, "percent": percent}
    if tag_latest:
        latest["tag"] = LATEST_TAG
    return [latest, {"tag": PREV_TAG, "revisionName": rolled_out_revision, "latestRevision": False,
                     "percent": 100 - percent}]


def full_traffic(tag_latest: bool = False) -> list[dict[str, Any]]:
    latest: dict[str, Any] = {"latestRevision": True, "percent": 100}
    if tag_latest:
        latest["tag"] = LATEST_TAG
    return [latest]


def _same_targets(live: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> bool:
    keys = ("latestRevision", "percent", "revisionName", "tag")
    return len(live) == len(wanted) and all(
        {k: a.get(k) for k in keys} == {k: b.get(k) for k in keys} for a, b in zip(live, wanted, strict=True))


def new_revision_pending(ksvc: dict[str, Any] | None, desired_hash: str | None,
                         rolled_out_revision: str) -> bool:
    """Whether `latestRevision` may still resolve to something else than the desired template's revision."""
    if ksvc is None:
        return False
    annotations = (ksvc.get("metadata") or {}).get("annotations") or {}
    if desired_hash is not None and annotations.get(TEMPLATE_HASH_ANNOTATION) != desired_hash:
        return True  # this apply changes the template: Knative will create a revision
    if not observed(ksvc):
        # Knative has not looked at our last change yet. If that change pinned the traffic (a template
        # change), it stays pinned; a traffic-only change is kept as it was applied.
        live = (ksvc.get("spec") or {}).get("traffic") or []
        return _same_targets(live, pinned_traffic(rolled_out_revision)) or _same_targets(
            live, pinned_traffic(rolled_out_revision, tag_latest=True))
    status = _status(ksvc)
    created, ready = status.get("latestCreatedRevisionName"), status.get("latestReadyRevisionName")
    return not created or created != ready


def canary_percent(isvc: dict[str, Any]) -> int | None:
    value = ((isvc.get("spec") or {}).get("predictor") or {}).get("canaryTrafficPercent")
    return None if value is None else int(value)


def tag_routing(isvc: dict[str, Any]) -> bool:
    annotations = (isvc.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(TAG_ROUTING_ANNOTATION, "")).lower() == "true"


def desired_traffic(
    isvc: dict[str, Any],
    ksvc: dict[str, Any] | None = None,
    desired_hash: str | None = None,
    rollout: Rollout | None = None,
) -> list[dict[str, Any]]:
    """Traffic targets for the predictor's ksvc (Knative's `spec.traffic` shape).

    `ksvc` is the live Knative Service (None: not created yet), `desired_hash` the template hash of the
    ksvc about to be applied, `rollout` the rolled-out revisions (default: `rolled_out` of the isvc's
    status and the ksvc).
    """
    tag_latest = tag_routing(isvc)
    if rollout is None:
        rollout = rolled_out(isvc.get("status"), ksvc)
    stable = rollout.latest
    if stable is None or ksvc is None:
        return full_traffic(tag_latest)
    if new_revision_pending(ksvc, desired_hash, stable):
        return pinned_traffic(stable, tag_latest)
    percent = canary_percent(isvc)
    latest_ready = _status(ksvc).get("latestReadyRevisionName")
    if percent is None or percent >= 100 or latest_ready == stable:
        return full_traffic(tag_latest)
    return split_traffic(max(percent, 0), stable, tag_latest)
