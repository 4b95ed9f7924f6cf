"""Canary rollouts on the local control plane: v1 -> v2 at 20% -> v2 promoted -> v3 at 30% -> rollback to
v2 -> v3 promoted, with the Knative stand-in creating a revision per template change and reporting it
ready only after a delay. After every step the ksvc traffic, the isvc status and the `kubectl get isvc`
columns are exactly as specified; meanwhile the ksvc is polled and every routing the stand-in wrote is
checked: no traffic ever reaches a revision that was not ready, nor one other than the last rolled-out
revision and the step's own revision.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from e2e.inference_services import KSVC, condition, isvc_of, ksvc_of
from e2e.installation import OperatorProcess
from e2e.localkube import ControlPlane, Kubectl
from e2e.operator.conftest import wait_for
from e2e.standin.knative import KnativeStandin

READINESS_DELAY = 1.5


def rev(n: int) -> str:
    return f"{KSVC}-{n:05d}"


def full() -> list[dict[str, Any]]:
    return [{"latestRevision": True, "percent": 100}]


def split(percent: int, stable: str) -> list[dict[str, Any]]:
    return [{"latestRevision": True, "percent": percent},
            {"tag": "prev", "revisionName": stable, "latestRevision": False, "percent": 100 - percent}]


def routed(latest: str, percent: int, stable: str | None = None) -> list[dict[str, Any]]:
    """The ksvc status traffic (and its isvc mirror): latest target resolved, prev target named."""
    targets = [{"latestRevision": True, "revisionName": latest, "percent": percent}]
    if stable is not None:
        targets.append({"latestRevision": False, "revisionName": stable, "percent": 100 - percent,
                        "tag": "prev"})
    return targets


# storage version, canaryTrafficPercent, ksvc spec.traffic, status traffic, rolled out (latest, previous),
# the columns PREV LATEST PREVROLLEDOUTREVISION LATESTREADYREVISION
STEPS = [
    ("v1", None, full(), routed(rev(1), 100), (rev(1), None), ("", "100", "", rev(1))),
    ("v2", 20, split(20, rev(1)), routed(rev(2), 20, rev(1)), (rev(1), None), ("80", "20", rev(1), rev(2))),
    ("v2", None, full(), routed(rev(2), 100), (rev(2), rev(1)), ("", "100", "", rev(2))),
    ("v3", 30, split(30, rev(2)), routed(rev(3), 30, rev(2)), (rev(2), rev(1)), ("70", "30", rev(2), rev(3))),
    ("v3", 0, split(0, rev(2)), routed(rev(3), 0, rev(2)), (rev(2), rev(1)), ("100", "0", rev(2), rev(3))),
    ("v3", None, full(), routed(rev(3), 100), (rev(3), rev(2)), ("", "100", "", rev(3))),
]


def isvc_manifest(version: str, canary: int | None) -> str:
    predictor: dict[str, Any] = {"pytorch": {"storageUri": f"gs://kfserving-examples/mnist/{version}"}}
    if canary is not None:
        predictor["canaryTrafficPercent"] = canary
    return json.dumps({"apiVersion": "serving.kubeflow.org/v1beta1", "kind": "InferenceService",
                       "metadata": {"name": "torchserve"}, "spec": {"predictor": predictor}})


def columns(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    """`kubectl get isvc` as {column: cell}, cut at the header's column starts (cells may be empty)."""
    header, row = kubectl("get", "isvc", "torchserve", "-n", namespace).stdout.splitlines()[:2]
    names = header.split()
    starts = [header.index(name) for name in names]
    ends = [*starts[1:], None]
    return {name: row[start:end].strip() for name, start, end in zip(names, starts, ends, strict=True)}


class KsvcPoller:
    """Reads the ksvc every few milliseconds in a thread; keeps every distinct (spec, status) traffic."""

    def __init__(self, cluster: ControlPlane, namespace: str) -> None:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(str(cluster.kubeconfig), client_configuration=configuration)
        self.api = kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(configuration))
        self.namespace = namespace
        self.seen: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                ksvc = self.api.get_namespaced_custom_object(
                    "serving.knative.dev", "v1", self.namespace, "services", KSVC)
            except kubernetes.client.exceptions.ApiException:
                continue
            self.polls += 1
            state = (ksvc["spec"].get("traffic") or [], (ksvc.get("status") or {}).get("traffic") or [])
            if not self.seen or self.seen[-1] != state:
                self.seen.append(state)

    def __enter__(self) -> KsvcPoller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def take(self) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
        seen, self.seen = self.seen, self.seen[-1:]
        return seen


@pytest.fixture
def slow_knative(knative: KnativeStandin) -> Iterator[KnativeStandin]:
    knative.readiness_delay = READINESS_DELAY
    try:
        yield knative
    finally:
        knative.readiness_delay = 0.0


def settled(kubectl: Kubectl, namespace: str, step: tuple[Any, ...]) -> dict[str, Any] | None:
    _, _, spec_traffic, status_traffic, rolled, _ = step
    isvc = isvc_of(kubectl, namespace)
    ksvc = ksvc_of(kubectl, namespace)
    if isvc is None or ksvc is None or condition(isvc, "Ready").get("status") != "True":
        return None
    if isvc["status"].get("observedGeneration") != isvc["metadata"]["generation"]:
        return None
    component = isvc["status"].get("components", {}).get("predictor", {})
    done = (ksvc["spec"].get("traffic") == spec_traffic and ksvc["status"].get("traffic") == status_traffic
            and ksvc["status"].get("observedGeneration") == ksvc["metadata"]["generation"]
            and (component.get("latestRolledoutRevision"),
                 component.get("previousRolledoutRevision")) == rolled
            and component.get("traffic") == status_traffic)
    return isvc if done else None


def test_scripted_canary_rollout_promotion_and_rollback(
    cluster: ControlPlane, operator: OperatorProcess, slow_knative: KnativeStandin, kubectl: Kubectl,
    namespace: str
) -> None:
    key = f"{namespace}/{KSVC}"
    stable: str | None = None
    revisions = 0
    pinned_windows = 0
    with KsvcPoller(cluster, namespace) as poller:
        for index, step in enumerate(STEPS):
            version, canary, _, _, rolled, cells = step
            new_template = index == 0 or version != STEPS[index - 1][0]
            revisions += new_template
            allowed = {rev(revisions)} | ({stable} if stable else set())
            routings_before = len([r for r in slow_knative.routings if r[0] == key])
            kubectl("apply", "-n", namespace, "-f", "-", input=isvc_manifest(version, canary))
            isvc = wait_for(lambda step=step: settled(kubectl, namespace, step), timeout=60,
                            what=f"step {index} ({version}, canary {canary}) to settle")

            table = columns(kubectl, namespace)
            assert table.pop("AGE")
            assert table == {
                "NAME": "torchserve", "URL": f"http://torchserve.{namespace}.example.com", "READY": "True",
                "PREV": cells[0], "LATEST": cells[1], "PREVROLLEDOUTREVISION": cells[2],
                "LATESTREADYREVISION": cells[3]}
            assert isvc["status"]["components"]["predictor"]["latestReadyRevision"] == rev(revisions)

            pinned = False
            for spec_seen, status_seen in poller.take():
                for target in spec_seen:  # the only revision ever named is the last rolled-out one
                    named = target.get("revisionName") if not target.get("latestRevision") else stable
                    assert named == stable, (index, spec_seen)
                for target in status_seen:
                    if target["percent"] > 0:
                        assert target["revisionName"] in allowed, (index, status_seen, allowed)
                pinned = pinned or (stable is not None and spec_seen == split(0, stable))
            for _, traffic, ready in [r for r in slow_knative.routings if r[0] == key][routings_before:]:
                for target in traffic:
                    if target["percent"] > 0:
                        assert target["revisionName"] in ready, (index, traffic, "not ready")
                        assert target["revisionName"] in allowed, (index, traffic, allowed)
            if new_template and stable is not None:
                pinned_windows += pinned  # the new revision's wait was spent pinned to the stable one
            stable = rolled[0]
    # Each new template after the first was pinned to the stable revision while it became ready.
    assert pinned_windows >= 2
    assert poller.polls > 50


def test_restart_in_the_middle_of_a_canary_keeps_the_split_and_writes_nothing(
    operator: OperatorProcess, knative: KnativeStandin, kubectl: Kubectl, namespace: str
) -> None:
    for step in STEPS[:2]:  # v1 rolled out, v2 at 20%
        kubectl("apply", "-n", namespace, "-f", "-", input=isvc_manifest(step[0], step[1]))
        wait_for(lambda step=step: settled(kubectl, namespace, step), timeout=60, what="the canary to settle")
    before = {kind: kubectl.get("-n", namespace, kind, name)["metadata"]["resourceVersion"]
              for kind, name in (("isvc", "torchserve"), ("services.serving.knative.dev", KSVC))}
    operator.stop()
    offset = len(operator.log())
    operator.start()
    wait_for(lambda: f"reconciled {namespace}/torchserve: no changes" in operator.log()[offset:],
             what="the restarted operator to reconcile torchserve")
    after = {kind: kubectl.get("-n", namespace, kind, name)["metadata"]["resourceVersion"]
             for kind, name in (("isvc", "torchserve"), ("services.serving.knative.dev", KSVC))}
    assert after == before
    assert ksvc_of(kubectl, namespace)["spec"]["traffic"] == split(20, rev(1))
