"""The operator on the local control plane, running with exactly its manifest's RBAC.

Each example isvc (examples/mnist/) yields the expected Knative Service; with the Knative stand-in reporting
readiness the isvc becomes READY with its URL; spec and ConfigMap changes re-render; a restart writes
nothing; deleting the isvc removes the ksvc.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from e2e import REPO_ROOT
from e2e.inference_services import KSVC, condition, isvc_of, knative_defaulted, ksvc_of, ready_isvc
from e2e.installation import OPERATOR_NAMESPACE, OperatorProcess
from e2e.localkube import Kubectl
from e2e.operator.conftest import wait_for

GOLDEN = REPO_ROOT / "tests" / "operator" / "golden"
SAMPLES = ["torchserve", "gpu", "autoscaling", "metrics", "canary"]


def apply_second(kubectl: Kubectl, namespace: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "serving.kubeflow.org/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "second"},
        "spec": {"predictor": {"minReplicas": 0, "pytorch": {"storageUri": "s3://bucket/model"}}}}))


def events_for(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    listing = kubectl.get("-n", namespace, "events", "--field-selector", f"involvedObject.name={name}")
    return (listing or {}).get("items", [])


@pytest.mark.parametrize("sample", SAMPLES)
def test_each_example_yields_the_expected_knative_service(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, apply_sample, sample: str
) -> None:
    apply_sample(sample)
    ksvc = wait_for(lambda: ksvc_of(kubectl, namespace), what=f"ksvc of {sample}")
    isvc = isvc_of(kubectl, namespace)
    expected = yaml.safe_load((GOLDEN / f"{sample}.ksvc.yaml").read_text())
    expected["metadata"]["namespace"] = namespace
    expected["metadata"]["ownerReferences"][0]["uid"] = isvc["metadata"]["uid"]
    assert ksvc["spec"] == knative_defaulted(kubectl, expected)["spec"]
    for key in ("name", "namespace", "labels", "ownerReferences"):
        assert ksvc["metadata"][key] == expected["metadata"][key], key


def test_isvc_becomes_ready_with_its_url_when_knative_reports_ready(
    operator: OperatorProcess, knative, kubectl: Kubectl, namespace: str, apply_sample
) -> None:
    apply_sample("torchserve")
    isvc = wait_for(lambda: ready_isvc(kubectl, namespace), what="READY True")
    url = f"http://torchserve.{namespace}.example.com"  # ingress mode istio: the top-level host
    status = isvc["status"]
    assert status["url"] == url
    assert status["address"] == {"url": f"http://torchserve.{namespace}.svc.cluster.local"}
    assert status["components"]["predictor"]["url"] == f"http://{KSVC}.{namespace}.example.com"
    assert status["observedGeneration"] == isvc["metadata"]["generation"]
    assert status["components"]["predictor"]["latestReadyRevision"] == f"{KSVC}-00001"
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "IngressReady": "True", "PredictorReady": "True", "Ready": "True"}

    table = kubectl("get", "isvc", "torchserve", "-n", namespace).stdout.splitlines()
    header, row = table[0].split(), table[1].split()
    assert header == ["NAME", "URL", "READY", "PREV", "LATEST", "PREVROLLEDOUTREVISION",
                      "LATESTREADYREVISION", "AGE"]
    assert row[:4] == ["torchserve", url, "True", "100"]
    assert row[4] == f"{KSVC}-00001"
    assert any(e["reason"] == "InferenceServiceReady" and url in e["message"]
               for e in events_for(kubectl, namespace, "torchserve"))


def test_spec_change_rerenders_and_observes_the_new_generation(
    operator: OperatorProcess, knative, kubectl: Kubectl, namespace: str, apply_sample
) -> None:
    apply_sample("torchserve")
    wait_for(lambda: ready_isvc(kubectl, namespace), what="ready")
    apply_sample("canary")  # same isvc, new storageUri

    def rolled() -> dict[str, Any] | None:
        isvc = isvc_of(kubectl, namespace)
        ready = condition(isvc, "Ready").get("status") == "True"
        return isvc if ready and isvc["status"]["observedGeneration"] == 2 else None

    isvc = wait_for(rolled, what="generation 2 observed and ready")
    assert isvc["status"]["components"]["predictor"]["latestReadyRevision"] == f"{KSVC}-00002"
    init = ksvc_of(kubectl, namespace)["spec"]["template"]["spec"]["initContainers"][0]
    assert init["args"][0] == "gs://kfserving-examples/models/torchserve/image_classifier/v2"


def test_restarting_the_operator_writes_nothing_to_unchanged_objects(
    operator: OperatorProcess, knative, kubectl: Kubectl, namespace: str, apply_sample
) -> None:
    apply_sample("torchserve")
    apply_sample("metrics")  # same name: an update; then one more isvc beside it
    apply_second(kubectl, namespace)
    for name in ("torchserve", "second"):
        wait_for(lambda name=name: ready_isvc(kubectl, namespace, name), what=f"{name} ready")

    def versions() -> dict[str, str]:
        found = {}
        for kind in ("isvc", "services.serving.knative.dev"):
            for item in kubectl.get("-n", namespace, kind)["items"]:
                found[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
        return found

    before = versions()
    assert len(before) == 4
    operator.stop()
    offset = len(operator.log())
    operator.start()
    for name in ("torchserve", "second"):
        wait_for(lambda name=name: f"reconciled {namespace}/{name}: no changes" in operator.log()[offset:],
                 what=f"the restarted operator to reconcile {name}")
    assert versions() == before
    writes = [line for line in operator.log()[offset:].splitlines() if f"reconciled {namespace}/" in line
              and "no changes" not in line]
    assert writes == []


def test_deleting_the_isvc_removes_the_ksvc(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, apply_sample
) -> None:
    apply_sample("torchserve")
    wait_for(lambda: ksvc_of(kubectl, namespace), what="ksvc")
    kubectl("delete", "isvc", "torchserve", "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for(lambda: ksvc_of(kubectl, namespace) is None, timeout=60, what="garbage collection of the ksvc")


def test_ksvc_deleted_by_hand_is_recreated(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, apply_sample
) -> None:
    apply_sample("torchserve")
    first = wait_for(lambda: ksvc_of(kubectl, namespace), what="ksvc")
    kubectl("delete", "services.serving.knative.dev", KSVC, "-n", namespace)

    def recreated() -> dict[str, Any] | None:
        ksvc = ksvc_of(kubectl, namespace)
        return ksvc if ksvc and ksvc["metadata"]["uid"] != first["metadata"]["uid"] else None

    again = wait_for(recreated, what="ksvc recreated")
    assert again["spec"] == first["spec"]


def test_configmap_change_rerenders_every_isvc_and_bad_config_falls_back(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, apply_sample
) -> None:
    apply_sample("torchserve")
    apply_sample("gpu")  # same name: now a GPU isvc
    apply_second(kubectl, namespace)
    config = kubectl.get("-n", OPERATOR_NAMESPACE, "configmap", "inferenceservice-config")
    original = config["data"]["predictors"]

    def image(name: str = KSVC) -> str:
        ksvc = ksvc_of(kubectl, namespace, name)
        return ksvc["spec"]["template"]["spec"]["containers"][0]["image"] if ksvc else ""

    def invalid_config_event() -> bool:
        events = events_for(kubectl, OPERATOR_NAMESPACE, "inferenceservice-config")
        return any(e["reason"] == "InvalidConfig" and "data.predictors is not valid JSON" in e["message"]
                   for e in events)

    wait_for(lambda: image() == "torch-isvc/runtime:0.1.0-gpu", what="gpu image")
    wait_for(lambda: image("second-predictor-default") == "torch-isvc/runtime:0.1.0", what="cpu image")
    mirror = {"pytorch": {"image": "mirror.local/runtime", "defaultImageVersion": "7",
                          "defaultGpuImageVersion": "7-gpu"}}
    try:
        patch = {"data": {"predictors": json.dumps(mirror)}}
        kubectl("patch", "configmap", "inferenceservice-config", "-n", OPERATOR_NAMESPACE,
                "--type=merge", "-p", json.dumps(patch))
        wait_for(lambda: image() == "mirror.local/runtime:7-gpu", what="re-render of torchserve")
        wait_for(lambda: image("second-predictor-default") == "mirror.local/runtime:7",
                 what="re-render of second")

        kubectl("patch", "configmap", "inferenceservice-config", "-n", OPERATOR_NAMESPACE,
                "--type=merge", "-p", json.dumps({"data": {"predictors": "{not json"}}))
        wait_for(lambda: image() == "torch-isvc/runtime:0.1.0-gpu", what="fallback to the default image")
        wait_for(invalid_config_event, what="an InvalidConfig event on the ConfigMap")
    finally:
        kubectl("patch", "configmap", "inferenceservice-config", "-n", OPERATOR_NAMESPACE,
                "--type=merge", "-p", json.dumps({"data": {"predictors": original}}))


def test_missing_configmap_falls_back_to_defaults_with_an_event(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, apply_sample
) -> None:
    kubectl("delete", "configmap", "inferenceservice-config", "-n", OPERATOR_NAMESPACE)
    try:
        apply_sample("torchserve")
        ksvc = wait_for(lambda: ksvc_of(kubectl, namespace), what="ksvc rendered with default config")
        pod = ksvc["spec"]["template"]["spec"]
        assert pod["containers"][0]["image"] == "torch-isvc/runtime:0.1.0"
        assert pod["initContainers"][0]["image"] == "torch-isvc/storage-initializer:0.1.0"

        def config_missing_event() -> bool:
            return any(e["reason"] == "ConfigMissing" and e["type"] == "Warning"
                       and "inferenceservice-config not found" in e["message"]
                       for e in events_for(kubectl, namespace, "torchserve"))

        wait_for(config_missing_event, what="a ConfigMissing event on the isvc")
    finally:
        kubectl("apply", "-f", str(REPO_ROOT / "deploy" / "operator.yaml"))
