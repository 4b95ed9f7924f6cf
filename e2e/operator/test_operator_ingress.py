"""Ingress mode istio (the default): the VirtualService for the top-level host appears only once the
predictor is ready, with the specified hosts, gateways and Host rewrite; switching the ConfigMap to
`none` removes it and the isvc's URL becomes the predictor's."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.inference_services import KSVC, condition, isvc_of, ksvc_of, ready_isvc
from e2e.installation import OPERATOR_NAMESPACE, OperatorProcess
from e2e.localkube import Kubectl
from e2e.operator.conftest import wait_for
from e2e.standin.knative import KnativeStandin

VS = "virtualservices.networking.istio.io"


def vs_of(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    return kubectl.get("-n", namespace, VS, "torchserve")


@pytest.fixture
def slow_knative(knative: KnativeStandin) -> Iterator[KnativeStandin]:
    knative.readiness_delay = 3.0
    try:
        yield knative
    finally:
        knative.readiness_delay = 0.0


def set_ingress_mode(kubectl: Kubectl, mode: str) -> None:
    config = kubectl.get("-n", OPERATOR_NAMESPACE, "configmap", "inferenceservice-config")
    ingress = json.loads(config["data"]["ingress"])
    ingress["mode"] = mode
    kubectl("patch", "configmap", "inferenceservice-config", "-n", OPERATOR_NAMESPACE, "--type=merge",
            "-p", json.dumps({"data": {"ingress": json.dumps(ingress)}}))


def test_virtualservice_appears_only_after_the_predictor_is_ready_with_hosts_and_rewrite(
    operator: OperatorProcess, slow_knative: KnativeStandin, kubectl: Kubectl, namespace: str, apply_sample
) -> None:
    observations: list[tuple[bool, str, dict[str, Any]]] = []
    stop = threading.Event()

    def watch() -> None:  # (VirtualService exists, the ksvc's Ready, isvc status) as the isvc comes up
        while not stop.wait(0.05):
            isvc = isvc_of(kubectl, namespace) or {}
            exists = vs_of(kubectl, namespace) is not None
            ksvc_ready = condition(ksvc_of(kubectl, namespace), "Ready").get("status", "")
            observations.append((exists, ksvc_ready, isvc.get("status") or {}))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        apply_sample("torchserve")
        isvc = wait_for(lambda: ready_isvc(kubectl, namespace), timeout=60, what="READY True")
        wait_for(lambda: any(exists for exists, _, _ in observations), what="the poller to see the VS")
    finally:
        stop.set()
        watcher.join(timeout=10)

    before = [obs for obs in observations if not obs[0]]
    assert before, "the VirtualService existed before the predictor could be ready"
    for _, _, status in before:
        assert condition({"status": status}, "IngressReady").get("status") != "True"
        assert "url" not in status or not status["url"].startswith("http://torchserve.")
    # Whenever the VirtualService was there, the predictor (read right after it) was ready.
    assert all(ksvc_ready == "True" for exists, ksvc_ready, _ in observations if exists)
    assert any(ksvc_ready != "True" for _, ksvc_ready, _ in before), "never saw the predictor not ready"

    assert isvc["status"]["url"] == f"http://torchserve.{namespace}.example.com"
    assert condition(isvc, "IngressReady")["status"] == "True"
    vs = vs_of(kubectl, namespace)
    [owner] = vs["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("InferenceService", "torchserve",
                                                             isvc["metadata"]["uid"])
    assert vs["metadata"]["labels"] == {"serving.kubeflow.org/inferenceservice": "torchserve"}
    assert vs["spec"]["hosts"] == [f"torchserve.{namespace}.example.com",
                                   f"torchserve.{namespace}.svc.cluster.local"]
    assert vs["spec"]["gateways"] == ["knative-serving/knative-ingress-gateway",
                                      "knative-serving/knative-local-gateway"]
    [route] = vs["spec"]["http"]
    assert [m["gateways"] for m in route["match"]] == [["knative-serving/knative-ingress-gateway"],
                                                        ["knative-serving/knative-local-gateway"]]
    assert route["match"][0]["authority"]["regex"] == f"^torchserve\\.{namespace}\\.example\\.com(:\\d+)?$"
    assert route["route"] == [{
        "destination": {"host": "knative-local-gateway.istio-system.svc.cluster.local",
                        "port": {"number": 80}},
        "weight": 100,
        "headers": {"request": {"set": {"Host": f"{KSVC}.{namespace}.svc.cluster.local"}}},
    }]


def test_switching_the_ingress_mode_to_none_removes_the_virtualservice(
    operator: OperatorProcess, knative: KnativeStandin, kubectl: Kubectl, namespace: str, apply_sample
) -> None:
    apply_sample("torchserve")
    wait_for(lambda: ready_isvc(kubectl, namespace), timeout=60, what="READY True")
    wait_for(lambda: vs_of(kubectl, namespace), what="the VirtualService")
    try:
        set_ingress_mode(kubectl, "none")
        wait_for(lambda: vs_of(kubectl, namespace) is None, what="the VirtualService to be removed")

        def predictor_url() -> dict[str, Any] | None:
            isvc = ready_isvc(kubectl, namespace)
            wanted = f"http://{KSVC}.{namespace}.example.com"
            return isvc if isvc and isvc["status"]["url"] == wanted else None

        isvc = wait_for(predictor_url, what="the isvc URL to be the predictor's")
        assert condition(isvc, "IngressReady")["status"] == "True"
        assert isvc["status"]["address"] == {"url": f"http://{KSVC}.{namespace}.svc.cluster.local"}
        assert ksvc_of(kubectl, namespace) is not None
    finally:
        set_ingress_mode(kubectl, "istio")
    wait_for(lambda: vs_of(kubectl, namespace), what="the VirtualService back in mode istio")
    wait_for(lambda: (ready_isvc(kubectl, namespace) or {}).get("status", {}).get("url")
             == f"http://torchserve.{namespace}.example.com", what="the top-level URL again")
