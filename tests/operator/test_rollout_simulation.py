"""The canary rollout script against a small model of Knative, driving the real reconciler under many
interleavings.

The operator is `reconcile` itself (reconcile.py) on an in-memory cluster (fake_kube.py): its indexes learn
of a change only when the watch event is delivered, and each delivered event makes it reconcile the isvcs
the kopf handlers would. Knative is modelled by what the operator relies on: a revision per template change
(`{ksvc}-{n:05d}`), `latestRevision` resolving to the latest *ready* revision, and a status that lags the
spec until Knative observes it. Each step of the script is a user edit; then watch deliveries, reconciles,
Knative observations, the new revision becoming ready, ConfigMap edits that change the revision template,
API errors and operator restarts happen in a random order. After every Knative observation, no traffic may
reach a revision that is not ready, nor one other than the last rolled-out revision and the revisions of
the step. Once everything has settled, the traffic and rolled-out revisions are the script's, and a
restarted operator writes nothing.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import pickle
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import kopf
import pytest
import yaml
from fake_kube import FakeCluster, copy_of
from isvc_operator import reconcile as reconcile_module
from isvc_operator.config import DEFAULTS
from isvc_operator.ingress import render_virtual_service
from isvc_operator.known import INFERENCE_SERVICE, KNATIVE_SERVICE, Key, Known
from isvc_operator.reconcile import reconcile
from isvc_operator.render import RenderError, render_knative_service
from isvc_operator.traffic import TEMPLATE_HASH_ANNOTATION, stored_rollout
from operator_samples import load_sample

NAMESPACE = "kfserving-test"
ISVC: Key = (NAMESPACE, "torchserve")
KSVC: Key = (NAMESPACE, "torchserve-predictor-default")
LOG = logging.getLogger("isvc_operator.simulation")


@pytest.fixture(autouse=True, scope="module")
def fast_rendering() -> Iterator[None]:
    """The simulation reconciles thousands of times, mostly with inputs it has seen: render each distinct
    input once (the renderers are pure functions, tested on their own in test_render*.py), and parse YAML
    with libyaml (the same YAML, faster than the pure-Python loader the renderer calls)."""
    patches = pytest.MonkeyPatch()

    @functools.lru_cache(maxsize=4096)
    def parse(text: str) -> Any:
        return yaml.load(text, Loader=yaml.CSafeLoader)

    def memoized(render: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        rendered: dict[bytes, Any] = {}

        def render_once(*args: Any, **kwargs: Any) -> dict[str, Any]:
            key = pickle.dumps((args, sorted(kwargs.items())))
            if key not in rendered:
                try:
                    rendered[key] = render(*args, **kwargs)
                except RenderError as error:
                    rendered[key] = error
            if isinstance(rendered[key], RenderError):
                raise rendered[key]
            return copy_of(rendered[key])

        return render_once

    patches.setattr(yaml, "safe_load", lambda text: copy_of(parse(text)))
    patches.setattr(reconcile_module, "render_knative_service", memoized(render_knative_service))
    patches.setattr(reconcile_module, "render_virtual_service", memoized(render_virtual_service))
    yield
    patches.undo()


def rev(n: int) -> str:
    return f"{KSVC[1]}-{n:05d}"


def config_data(image_version: str) -> dict[str, str]:
    sections = copy.deepcopy(DEFAULTS)
    sections["predictors"]["pytorch"]["defaultImageVersion"] = image_version
    return {section: json.dumps(value) for section, value in sections.items()}


@dataclass
class Knative:
    """Knative's controllers, as far as the operator relies on them, writing the ksvc's status."""

    cluster: FakeCluster
    revisions: list[tuple[str, str]] = field(default_factory=list)  # (name, template hash)
    ready: set[str] = field(default_factory=set)

    def observe(self) -> None:
        ksvc = self.cluster.get(KNATIVE_SERVICE, KSVC)
        if ksvc is None:
            return
        template = ksvc["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION]
        if not self.revisions or self.revisions[-1][1] != template:
            self.revisions.append((rev(len(self.revisions) + 1), template))
        status = self._resolve(ksvc)
        status["observedGeneration"] = ksvc["metadata"]["generation"]
        self.cluster.put(KNATIVE_SERVICE, {**ksvc, "status": status})

    def make_latest_ready(self) -> None:
        ksvc = self.cluster.get(KNATIVE_SERVICE, KSVC)
        if not self.revisions or ksvc is None:
            return
        self.ready.add(self.revisions[-1][0])
        if (ksvc.get("status") or {}).get("observedGeneration") is not None:
            self.cluster.put(KNATIVE_SERVICE, {**ksvc, "status": self._resolve(ksvc)})

    def _resolve(self, ksvc: dict[str, Any]) -> dict[str, Any]:
        status = copy_of(ksvc.get("status") or {})
        latest = self.revisions[-1][0]
        latest_ready = next((name for name, _ in reversed(self.revisions) if name in self.ready), None)
        status["latestCreatedRevisionName"] = latest
        status["conditions"] = [{"type": "Ready", "status": "True" if latest in self.ready else "Unknown"}]
        if latest_ready is None:
            status.pop("latestReadyRevisionName", None)
            status["traffic"] = []
            return status
        status["latestReadyRevisionName"] = latest_ready
        status["traffic"] = [
            {**t, "revisionName": latest_ready if t.get("latestRevision") else t["revisionName"]}
            for t in ksvc["spec"]["traffic"]]
        return status

    def routed(self) -> set[str]:
        ksvc = self.cluster.get(KNATIVE_SERVICE, KSVC) or {}
        traffic = (ksvc.get("status") or {}).get("traffic") or []
        return {target["revisionName"] for target in traffic if target["percent"] > 0}

    def traffic(self) -> dict[str, int]:
        ksvc = self.cluster.get(KNATIVE_SERVICE, KSVC) or {}
        return {t["revisionName"]: t["percent"] for t in ksvc["status"]["traffic"]}


@dataclass
class Operator:
    """The real reconciler fed by the fake's watch deliveries, as the kopf handlers feed it."""

    cluster: FakeCluster
    known: Known = field(init=False)
    due: list[Key] = field(default_factory=list)  # delivered events and failed reconciles to act on

    def __post_init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.due = self.cluster.list_all()
        self.known = self.cluster.known()

    def deliver_one(self) -> None:
        self.due += self.cluster.deliver(1, known=self.known)

    def reconcile_one(self) -> None:
        key = self.due.pop(0) if self.due else ISVC  # nothing due: a resync
        try:
            reconcile(key, self.known, self.cluster, LOG)
        except kopf.TemporaryError as error:
            assert error.delay and error.delay > 0
            self.due.append(key)  # the retry

    def settle(self) -> None:
        for _ in range(500):
            if not (self.due or self.cluster.pending):
                return
            self.deliver_one()
            if self.due:
                self.reconcile_one()
        raise AssertionError("the operator keeps writing: its writes never settle")


# (template, canaryTrafficPercent, expected traffic {revision: percent},
#  expected (latest, previous) rolled-out revisions) -- without ConfigMap edits in between
SCRIPT = [
    ("v1", None, {rev(1): 100}, (rev(1), None)),
    ("v2", 20, {rev(2): 20, rev(1): 80}, (rev(1), None)),
    ("v2", None, {rev(2): 100}, (rev(2), rev(1))),
    ("v3", 30, {rev(3): 30, rev(2): 70}, (rev(2), rev(1))),
    ("v3", 0, {rev(3): 0, rev(2): 100}, (rev(2), rev(1))),
    ("v3", None, {rev(3): 100}, (rev(3), rev(2))),
]


def edit_isvc(cluster: FakeCluster, template: str, canary: int | None) -> None:
    """The user's apply: the seed's sample, with its storage URI and canary percent."""
    isvc = cluster.get(INFERENCE_SERVICE, ISVC)
    if isvc is None:
        isvc = load_sample("torchserve", NAMESPACE)
        for generated in ("uid", "generation"):
            del isvc["metadata"][generated]
    predictor = isvc["spec"]["predictor"]
    predictor["pytorch"]["storageUri"] = f"gs://kfserving-examples/models/torchserve/{template}"
    predictor.pop("canaryTrafficPercent", None)
    if canary is not None:
        predictor["canaryTrafficPercent"] = canary
    cluster.put(INFERENCE_SERVICE, isvc)


def expected_traffic(canary: int | None, latest: str, stable: str | None) -> dict[str, int]:
    """What the script's step converges to, whatever revisions ConfigMap edits added."""
    if canary is None or canary >= 100 or stable is None or latest == stable:
        return {latest: 100}
    return {latest: canary, stable: 100 - canary}


def step(operator: Operator, knative: Knative, rng: random.Random, template: str, canary: int | None,
         config_edits: bool) -> bool:
    """One user edit and a random interleaving of everything else; whether the ConfigMap changed."""
    cluster = operator.cluster
    stable = stored_rollout((cluster.get(INFERENCE_SERVICE, ISVC) or {}).get("status")).latest
    before = len(knative.revisions)
    allowed_existing = {stable} | ({knative.revisions[-1][0]} if knative.revisions else set())
    edit_isvc(cluster, template, canary)
    edited_config = False
    actions = ["deliver", "deliver", "reconcile", "reconcile", "observe", "ready", "fail", "restart"]
    if config_edits:
        actions.append("config")
    for _ in range(60):
        action = rng.choice(actions)
        if action == "deliver":
            operator.deliver_one()
        elif action == "reconcile":
            operator.reconcile_one()
        elif action == "observe":
            knative.observe()
        elif action == "ready":
            knative.make_latest_ready()
        elif action == "fail":
            method = rng.choice(["apply_knative_service", "apply_status", "apply_virtual_service"])
            cluster.fail(method, rng.choice([409, 410, 500]))
        elif action == "restart" and rng.random() < 0.3:
            operator.restart()
        elif action == "config" and rng.random() < 0.3:
            cluster.put_config(config_data(f"0.1.{rng.randrange(3)}"))
            edited_config = True
        routed = knative.routed()
        created = {name for name, _ in knative.revisions[before:]}
        assert routed <= knative.ready, f"traffic to a revision not ready: {routed - knative.ready}"
        allowed = (allowed_existing | created) - {None}
        assert routed <= allowed, f"traffic to {routed - allowed}, allowed only {allowed}"
    cluster.failures.clear()
    for _ in range(4):  # then let everything finish in order
        operator.settle()
        knative.make_latest_ready()
        knative.observe()
    operator.settle()
    return edited_config


def assert_restart_writes_nothing(operator: Operator) -> None:
    cluster = operator.cluster
    versions = {(kind, key): body["metadata"]["resourceVersion"]
                for kind, objects in cluster.objects.items() for key, body in objects.items()}
    operator.restart()
    operator.settle()
    assert {(kind, key): body["metadata"]["resourceVersion"]
            for kind, objects in cluster.objects.items() for key, body in objects.items()} == versions


@pytest.mark.parametrize("seed", range(200))
def test_scripted_rollout_never_routes_to_an_unready_or_unexpected_revision(seed: int) -> None:
    rng = random.Random(seed)
    cluster = FakeCluster()
    cluster.put_config(config_data("0.1.0"))
    knative = Knative(cluster)
    operator = Operator(cluster)
    config_edits = seed % 2 == 1  # half the seeds keep the script's revision numbers exact
    for template, canary, expected, rollout in SCRIPT:
        stable = stored_rollout((cluster.get(INFERENCE_SERVICE, ISVC) or {}).get("status")).latest
        edited = step(operator, knative, rng, template, canary, config_edits)
        latest = knative.revisions[-1][0]
        stored = stored_rollout(cluster.get(INFERENCE_SERVICE, ISVC)["status"])
        if not config_edits:
            assert knative.traffic() == expected, (template, canary)
            assert (stored.latest, stored.previous) == rollout
        elif not edited:
            assert {r: p for r, p in knative.traffic().items() if p} == \
                {r: p for r, p in expected_traffic(canary, latest, stable).items() if p}
        if canary is None:
            assert stored.latest == latest
        assert_restart_writes_nothing(operator)
