"""The rollout script of the canary issue against a small model of Knative, under many interleavings.

Knative is modelled by what the operator relies on: a revision per template change
(`{ksvc}-{n:05d}`), `latestRevision` resolving to the latest *ready* revision, and a status that lags
the spec until Knative observes it. The operator is modelled by the same pure functions it runs
(`rolled_out`, `desired_traffic`). Each step is a user edit; then operator reconciles, Knative
observations and the new revision becoming ready happen in a random order. After every Knative
observation, no traffic may reach a revision that is not ready, nor one other than the last rolled-out
revision and the step's own new revision.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from isvc_operator.traffic import TEMPLATE_HASH_ANNOTATION, desired_traffic, rolled_out, stored_rollout

KSVC = "torchserve-predictor-default"


def rev(n: int) -> str:
    return f"{KSVC}-{n:05d}"


@dataclass
class Knative:
    ksvc: dict[str, Any] = field(default_factory=lambda: {
        "metadata": {"name": KSVC, "generation": 1, "annotations": {}},
        "spec": {"traffic": []}, "status": {}})
    revisions: list[tuple[str, str]] = field(default_factory=list)
    ready: set[str] = field(default_factory=set)
    exists: bool = False  # the operator creates the ksvc with its first apply

    def observe(self) -> None:
        if not self.exists:
            return
        metadata, status = self.ksvc["metadata"], self.ksvc["status"]
        template = metadata["annotations"].get(TEMPLATE_HASH_ANNOTATION)
        if not self.revisions or self.revisions[-1][1] != template:
            self.revisions.append((rev(len(self.revisions) + 1), template))
        self._resolve()
        status["observedGeneration"] = metadata["generation"]

    def make_latest_ready(self) -> None:
        if self.revisions and self.exists:
            self.ready.add(self.revisions[-1][0])
            if self.ksvc["status"].get("observedGeneration") is not None:
                self._resolve()

    def _resolve(self) -> None:
        status = self.ksvc["status"]
        latest = self.revisions[-1][0]
        latest_ready = next((name for name, _ in reversed(self.revisions) if name in self.ready), None)
        status["latestCreatedRevisionName"] = latest
        status["conditions"] = [{"type": "Ready", "status": "True" if latest in self.ready else "Unknown"}]
        if latest_ready is None:
            status.pop("latestReadyRevisionName", None)
            status["traffic"] = []
            return
        status["latestReadyRevisionName"] = latest_ready
        status["traffic"] = [
            {**t, "revisionName": latest_ready if t.get("latestRevision") else t["revisionName"]}
            for t in self.ksvc["spec"]["traffic"]]

    def routed(self) -> set[str]:
        return {t["revisionName"] for t in self.ksvc["status"].get("traffic") or [] if t["percent"] > 0}


@dataclass
class Operator:
    knative: Knative
    isvc: dict[str, Any] = field(default_factory=lambda: {
        "metadata": {"name": "torchserve", "namespace": "ns"}, "spec": {"predictor": {}}, "status": {}})
    template: str = ""

    def reconcile(self) -> None:
        ksvc = self.knative.ksvc
        live = ksvc if self.knative.exists else None
        rollout = rolled_out(self.isvc["status"], live)
        component = {}
        if rollout.latest:
            component["latestRolledoutRevision"] = rollout.latest
        if rollout.previous:
            component["previousRolledoutRevision"] = rollout.previous
        self.isvc["status"] = {"components": {"predictor": component}}  # persisted before the apply
        traffic = desired_traffic(self.isvc, live, self.template, rollout)
        metadata = ksvc["metadata"]
        if metadata["annotations"].get(TEMPLATE_HASH_ANNOTATION) != self.template or \
                ksvc["spec"]["traffic"] != traffic:
            if live is not None:
                metadata["generation"] += 1
            self.knative.exists = True
            metadata["annotations"][TEMPLATE_HASH_ANNOTATION] = self.template
            ksvc["spec"]["traffic"] = traffic


# (template, canaryTrafficPercent, expected traffic {revision: percent},
#  expected (latest, previous) rolled-out revisions)
SCRIPT = [
    ("v1", None, {rev(1): 100}, (rev(1), None)),
    ("v2", 20, {rev(2): 20, rev(1): 80}, (rev(1), None)),
    ("v2", None, {rev(2): 100}, (rev(2), rev(1))),
    ("v3", 30, {rev(3): 30, rev(2): 70}, (rev(2), rev(1))),
    ("v3", 0, {rev(3): 0, rev(2): 100}, (rev(2), rev(1))),
    ("v3", None, {rev(3): 100}, (rev(3), rev(2))),
]


def settle(operator: Operator, knative: Knative, rng: random.Random, allowed: set[str]) -> None:
    actions = ["operator", "knative", "ready"]
    for _ in range(200):
        action = rng.choice(actions)
        if action == "operator":
            operator.reconcile()
        elif action == "knative":
            knative.observe()
        else:
            knative.make_latest_ready()
        if knative.ksvc["status"].get("traffic"):
            routed = knative.routed()
            assert routed <= knative.ready, f"traffic to a revision not ready: {routed - knative.ready}"
            assert routed <= allowed, f"traffic to {routed - allowed}, allowed only {allowed}"
    for _ in range(4):  # then let everything finish in order
        operator.reconcile()
        knative.make_latest_ready()
        knative.observe()
    operator.reconcile()


@pytest.mark.parametrize("seed", range(60))
def test_scripted_rollout_never_routes_to_an_unready_or_unexpected_revision(seed: int) -> None:
    rng = random.Random(seed)
    knative = Knative()
    operator = Operator(knative)
    for template, canary, expected, rollout in SCRIPT:
        stable = stored_rollout(operator.isvc["status"]).latest
        predictor = operator.isvc["spec"]["predictor"]
        predictor.pop("canaryTrafficPercent", None)
        if canary is not None:
            predictor["canaryTrafficPercent"] = canary
        changed = template != operator.template
        operator.template = template
        new_revision = rev(len(knative.revisions) + 1) if changed else knative.revisions[-1][0]
        settle(operator, knative, rng, {stable, new_revision} - {None})
        traffic = {t["revisionName"]: t["percent"] for t in knative.ksvc["status"]["traffic"]}
        assert traffic == expected, (template, canary)
        assert tuple(stored_rollout(operator.isvc["status"]).__dict__.values()) == rollout
