"""The product on the real node, as users run it: the operator image as the Deployment of deploy/operator.yaml
(its ServiceAccount, its probes, 2 replicas of which the holder of a Lease acts) reconciles the example
InferenceService (examples/mnist/torchserve.yaml) in RawDeployment mode into a Deployment that
kube-controller-manager turns into a ReplicaSet and a Pod, which kube-scheduler places and the kubelet runs:
the storage-initializer image copies the model from the GCS emulator into the emptyDir, the runtime image
serves it as UID 65532, and the MNIST request through the Service (kube-proxy) gets the expected answer.

Scaling itself is not tested: the HPA controller runs and reports the HPA's conditions, but there is no
metrics API here, so it cannot read a utilization and says so.

The tests of this module share one served isvc (``served``, made once: a pod start costs tens of seconds on
this machine) and run in file order: the failover test changes which replica leads, the last test deletes
the isvc. When the node cannot start, they fail with the reason: they never skip.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from e2e import REPO_ROOT
from e2e.demo import shared_dir
from e2e.inference_services import condition, isvc_of
from e2e.installation import OPERATOR_NAMESPACE
from e2e.localkube import Kubectl
from e2e.node.conftest import OperatorOnNode
from e2e.node.node import RealNode
from e2e.node.workloads import (
    http_inside,
    node_kubectl,
    pod_pids,
    service_ip,
    uids_of,
    wait_for,
    with_bad_storage_uri,
)

NAMESPACE = "serving"
ISVC = "torchserve"
PREDICTOR = f"{ISVC}-predictor-default"
ISVC_LABEL = "serving.kubeflow.org/inferenceservice"
RAW = {"serving.kubeflow.org/deploymentMode": "RawDeployment"}
FIELD_MANAGER = "torch-isvc-operator"
RUNTIME_UID = 65532
HPA = "horizontalpodautoscalers.autoscaling"

pytestmark = pytest.mark.timeout(900)


def raw_example(name: str = ISVC) -> dict[str, Any]:
    """examples/mnist/torchserve.yaml with the RawDeployment annotation."""
    isvc = yaml.safe_load((REPO_ROOT / "examples" / "mnist" / "torchserve.yaml").read_text())
    isvc["metadata"].update(name=name, namespace=NAMESPACE,
                            annotations={**(isvc["metadata"].get("annotations") or {}), **RAW})
    return isvc


@dataclass
class Served:
    kubectl: Kubectl
    url: str
    answer: str
    first_answer_seconds: float


@pytest.fixture(scope="module")
def served(node: RealNode, operator_on_node: OperatorOnNode) -> Iterator[Served]:
    kubectl = node_kubectl(node)
    kubectl("create", "namespace", NAMESPACE)
    request = (shared_dir() / "data" / "requests" / "v1" / "mnist.json").read_bytes()
    began = time.monotonic()
    kubectl("apply", "-f", "-", input=json.dumps(raw_example()))
    wait_for("the predictor's Service", lambda: kubectl.get("-n", NAMESPACE, "service", PREDICTOR), 60, node,
             NAMESPACE)
    url = f"http://{service_ip(node, PREDICTOR, NAMESPACE)}/v1/models/{ISVC}:predict"
    _, text = wait_for("the MNIST prediction through the Service",
                       lambda: (answer := http_inside(node, url, request))[0] == 200 and answer,
                       300, node, NAMESPACE)
    seconds = time.monotonic() - began
    print(f"isvc applied -> first answer through the Service: {seconds:.1f} s", file=sys.stderr)
    try:
        yield Served(kubectl, url, text, seconds)
    finally:
        kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def printed_columns(kubectl: Kubectl, *args: str) -> dict[str, str]:
    """The one row `kubectl get` prints, by column header."""
    header, row = kubectl("get", *args).stdout.splitlines()[:2]
    return dict(zip(header.split(), row.split(), strict=False))


def test_the_operator_runs_as_two_ready_replicas_on_its_service_account_one_holding_the_lease(
    node: RealNode, operator_on_node: OperatorOnNode
) -> None:
    pods = operator_on_node.pods()
    assert len(pods) == 2 and len(operator_on_node.ready_pods()) == 2
    for pod in pods:
        assert pod["spec"]["serviceAccountName"] == "torch-isvc-operator"
        assert pod["spec"]["nodeName"] == node.layout.name
        [container] = pod["spec"]["containers"]
        assert container["image"] == "torch-isvc/operator:0.1.0"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert operator_on_node.holder() in {pod["metadata"]["name"] for pod in pods}
    assert uids_of(node, b"isvc_operator") == {RUNTIME_UID}


def test_the_example_isvc_in_raw_mode_answers_the_mnist_request_through_its_service_as_uid_65532(
    node: RealNode, served: Served, operator_on_node: OperatorOnNode
) -> None:
    assert json.loads(served.answer) == {"predictions": [2]}
    assert uids_of(node, b"isvc_runtime") == {RUNTIME_UID}
    kubectl = served.kubectl
    deployment = kubectl.get("-n", NAMESPACE, "deployment", PREDICTOR)
    assert deployment["metadata"]["ownerReferences"][0]["name"] == ISVC
    [replica_set] = kubectl.get("-n", NAMESPACE, "replicasets", "-l", f"{ISVC_LABEL}={ISVC}")["items"]
    assert replica_set["metadata"]["ownerReferences"][0]["name"] == PREDICTOR
    [pod] = kubectl.get("-n", NAMESPACE, "pods", "-l", f"{ISVC_LABEL}={ISVC}")["items"]
    assert pod["metadata"]["ownerReferences"][0]["name"] == replica_set["metadata"]["name"]
    assert pod["spec"]["nodeName"] == node.layout.name
    [init] = pod["status"]["initContainerStatuses"]
    assert init["name"] == "storage-initializer" and init["state"]["terminated"]["exitCode"] == 0
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert "emptyDir" in volumes["kfserving-provision-location"]  # /mnt/models, filled by the initializer
    isvc = wait_for("the isvc Ready", lambda: (i := isvc_of(kubectl, NAMESPACE, ISVC))
                    and condition(i, "Ready").get("status") == "True" and i, 60, node, NAMESPACE)
    assert isvc["status"]["url"] == f"http://{PREDICTOR}.{NAMESPACE}.svc.cluster.local"
    assert printed_columns(kubectl, "isvc", ISVC, "-n", NAMESPACE)["READY"] == "True"
    leader = operator_on_node.holder()
    for pod_name in (p["metadata"]["name"] for p in operator_on_node.pods()):
        acted = f"reconciled {NAMESPACE}/{ISVC}" in operator_on_node.log(pod_name)
        assert acted == (pod_name == leader), f"{pod_name} acted: {acted}; leader {leader}"


def test_the_hpa_controller_reports_the_hpa_it_cannot_scale_without_a_metrics_api(
    node: RealNode, served: Served
) -> None:
    kubectl = served.kubectl
    hpa = wait_for("the HPA controller's conditions",
                   lambda: (h := kubectl.get("-n", NAMESPACE, HPA, PREDICTOR))
                   and condition(h, "ScalingActive") and h, 60, node, NAMESPACE)
    assert condition(hpa, "AbleToScale")["status"] == "True"
    active = condition(hpa, "ScalingActive")
    assert active["status"] == "False" and "metrics" in active["message"], active
    assert hpa["spec"]["scaleTargetRef"]["name"] == PREDICTOR


def operator_writes(kubectl: Kubectl) -> dict[str, Any]:
    """What the operator has written about the isvc, as the apiserver records it: the isvc's resourceVersion
    (only the operator writes it: its status), the Service's and Deployment's, the time of the operator's
    last apply to each child (managedFields of its field manager), and the Events about the isvc."""
    found: dict[str, Any] = {"isvc": isvc_of(kubectl, NAMESPACE, ISVC)["metadata"]["resourceVersion"]}
    for kind in ("deployment", "service", HPA):
        metadata = kubectl.get("-n", NAMESPACE, kind, PREDICTOR, "--show-managed-fields")["metadata"]
        found[kind] = [(entry["operation"], entry.get("time")) for entry in metadata["managedFields"]
                       if entry["manager"] == FIELD_MANAGER]
        if kind != HPA:  # the HPA controller writes the HPA's status
            found[f"{kind} version"] = metadata["resourceVersion"]
    events = kubectl.get("-n", NAMESPACE, "events", "--field-selector", f"involvedObject.name={ISVC}")
    found["events"] = sorted((e["reason"], e.get("count") or 1) for e in events["items"])
    return found


def took_over_writing_nothing(node: RealNode, kubectl: Kubectl, operator_on_node: OperatorOnNode,
                              standby: str, began: float, before: dict[str, Any], cause: str) -> None:
    """The standby holds the Lease within 30 s of ``began`` (printed, after ``cause``), reconciles every
    isvc as a new leader does, and that writes nothing: ``operator_writes`` are still ``before``."""
    wait_for("the standby to hold the Lease", lambda: operator_on_node.holder() == standby, 30, node,
             OPERATOR_NAMESPACE, interval=0.1)
    takeover = time.monotonic() - began
    print(f"operator failover: {cause} -> standby holds the Lease: {takeover:.1f} s", file=sys.stderr)
    assert takeover <= 30
    wait_for("the new leader's reconcile of every isvc",
             lambda: f"reconciled {NAMESPACE}/{ISVC} (raw): no changes" in operator_on_node.log(standby),
             30, node, OPERATOR_NAMESPACE)
    assert operator_writes(kubectl) == before


def test_deleting_the_active_operator_pod_hands_over_within_30_seconds_writing_nothing_twice(
    node: RealNode, served: Served, operator_on_node: OperatorOnNode
) -> None:
    kubectl = served.kubectl
    wait_for("the isvc Ready", lambda: condition(isvc_of(kubectl, NAMESPACE, ISVC), "Ready").get("status")
             == "True", 60, node, NAMESPACE)
    before = operator_writes(kubectl)
    assert all(before[kind] for kind in ("deployment", "service", HPA, "events")), before
    active = operator_on_node.holder()
    [standby] = [p["metadata"]["name"] for p in operator_on_node.pods() if p["metadata"]["name"] != active]
    began = time.monotonic()
    kubectl("delete", "pod", active, "-n", OPERATOR_NAMESPACE, "--wait=false")
    took_over_writing_nothing(node, kubectl, operator_on_node, standby, began, before,
                              "active pod deleted")
    # The replacement replica stands by; the new leader acts on the next change, once.
    wait_for("the Deployment's replacement replica ready",
             lambda: len(operator_on_node.ready_pods()) == 2, 120, node, OPERATOR_NAMESPACE)
    [replacement] = [name for name in operator_on_node.ready_pods() if name != standby]
    kubectl("patch", "isvc", ISVC, "-n", NAMESPACE, "--type=merge", "-p",
            json.dumps({"spec": {"predictor": {"maxReplicas": 3}}}))
    wait_for("the new leader's HPA", lambda: kubectl.get("-n", NAMESPACE, HPA, PREDICTOR)["spec"]
             ["maxReplicas"] == 3, 30, node, NAMESPACE)
    assert "reconciled" not in operator_on_node.log(replacement)
    assert operator_on_node.holder() == standby
    gone = kubectl.get("-n", OPERATOR_NAMESPACE, "pod", active) is None
    print(f"operator failover: the deleted pod {'gone' if gone else 'still terminating'}"
          f" {time.monotonic() - began:.1f} s after its deletion", file=sys.stderr)


def test_killing_the_active_operator_with_sigkill_hands_over_within_30_seconds_writing_nothing_twice(
    node: RealNode, served: Served, operator_on_node: OperatorOnNode
) -> None:
    """No SIGTERM, no release of the Lease: the standby takes it once the dead holder's record has not
    changed for leaseDurationSeconds (15 s) on its own clock; the killed container restarts in its pod as a
    standby."""
    kubectl = served.kubectl
    wait_for("the isvc Ready and both operator replicas ready", lambda: condition(
        isvc_of(kubectl, NAMESPACE, ISVC), "Ready").get("status") == "True"
        and len(operator_on_node.ready_pods()) == 2, 120, node, NAMESPACE)
    before = operator_writes(kubectl)
    active = operator_on_node.holder()
    [pod] = [p for p in operator_on_node.pods() if p["metadata"]["name"] == active]
    [standby] = [p["metadata"]["name"] for p in operator_on_node.pods() if p["metadata"]["name"] != active]
    [pid] = pod_pids(node, pod["metadata"]["uid"], b"isvc_operator")
    began = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    took_over_writing_nothing(node, kubectl, operator_on_node, standby, began, before, "SIGKILL")
    restarted = wait_for("the killed container restarted in its pod, ready", lambda: (
        p := kubectl.get("-n", OPERATOR_NAMESPACE, "pod", active)) and p["status"]["containerStatuses"][0][
        "restartCount"] >= 1 and active in operator_on_node.ready_pods() and p, 90, node, OPERATOR_NAMESPACE)
    last = restarted["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 137, last  # 128 + SIGKILL
    assert operator_on_node.holder() == standby
    assert "reconciled" not in operator_on_node.log(active)  # the restarted container's log: a standby's


def test_a_bad_storage_uri_reaches_the_isvc_conditions_with_the_init_containers_message_within_60_seconds(
    node: RealNode, served: Served
) -> None:
    kubectl = served.kubectl
    began = time.monotonic()
    kubectl("apply", "-f", "-", input=json.dumps(with_bad_storage_uri(raw_example())))
    failed = wait_for("PredictorReady False with the storage initializer's message",
                      lambda: (i := isvc_of(kubectl, NAMESPACE, "broken"))
                      and condition(i, "PredictorReady").get("status") == "False" and i, 60, node, NAMESPACE)
    print(f"bad storageUri -> isvc condition: {time.monotonic() - began:.1f} s", file=sys.stderr)
    message = condition(failed, "PredictorReady")["message"]
    assert "container storage-initializer terminated" in message, message
    assert "no-such-bucket" in message, message
    assert condition(failed, "Ready")["status"] == "False"
    kubectl("delete", "isvc", "broken", "-n", NAMESPACE)


def test_kubectl_delete_isvc_removes_its_deployment_service_hpa_and_pods(
    node: RealNode, served: Served
) -> None:
    kubectl = served.kubectl
    kubectl("delete", "isvc", ISVC, "-n", NAMESPACE)
    for kind in ("deployment", "service", HPA):
        wait_for(f"{kind} gone", lambda kind=kind: kubectl.get("-n", NAMESPACE, kind, PREDICTOR) is None,
                 60, node, NAMESPACE)
    selector = f"{ISVC_LABEL}={ISVC}"
    wait_for("ReplicaSet and Pods gone",
             lambda: not kubectl.get("-n", NAMESPACE, "replicasets", "-l", selector)["items"]
             and not kubectl.get("-n", NAMESPACE, "pods", "-l", selector)["items"], 90, node, NAMESPACE)
    assert uids_of(node, b"isvc_runtime") == set()
