"""Raw deployment mode on the local control plane: the operator (with exactly its manifest's RBAC) turns a
RawDeployment isvc into a real Deployment, which kube-controller-manager turns into a ReplicaSet and a Pod;
a Service; an autoscaling/v2 HPA whose status conditions the real HPA controller writes; `kubectl delete
isvc` removes everything (garbage collection). canaryTrafficPercent in raw mode is refused at admission by
deploy/admission-policy.yaml (a ValidatingAdmissionPolicy, evaluated by the real apiserver).

There is no kubelet here (the Pod stays Pending): the pod-failure test writes the Pod's status through the
pods/status subresource, standing in for the kubelet in that one test only. The same path with a kubelet
(the storage initializer really failing on a bad storageUri) runs on the real node:
e2e/node/test_operator_on_node.py.

The session's control plane runs no HPA controller (e2e/localkube's CONTROLLERS), so this module starts a
second kube-controller-manager, the same binary, with only `horizontal-pod-autoscaler-controller`. Without a
metrics API the HPA cannot scale: the controller reports that in the HPA's conditions, which is what these
tests look for.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from e2e.inference_services import condition, isvc_of
from e2e.installation import EXAMPLES, OperatorProcess
from e2e.localkube import ControlPlane, Kubectl
from e2e.operator.conftest import wait_for
from e2e.processes import free_port, popen, stop, tail

RAW = {"serving.kubeflow.org/deploymentMode": "RawDeployment"}
PREDICTOR = "torchserve-predictor-default"
LABEL = "serving.kubeflow.org/inferenceservice=torchserve"


@pytest.fixture(scope="module")
def hpa_controller(cluster: ControlPlane) -> Iterator[None]:
    """kube-controller-manager running only the HPA controller, on the session's apiserver."""
    workdir = cluster.workdir / "kcm-hpa"
    workdir.mkdir(exist_ok=True)
    kubeconfig = str(cluster.client_kubeconfig("kcm-hpa", "system:kube-controller-manager",
                                               ("system:masters",)))
    log = workdir / "kcm-hpa.log"
    proc = popen([str(cluster.binary("kube-controller-manager")), f"--kubeconfig={kubeconfig}",
                  f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
                  "--bind-address=127.0.0.1", f"--secure-port={free_port()}", f"--cert-dir={workdir}",
                  "--leader-elect=false", "--controllers=horizontal-pod-autoscaler-controller",
                  "--horizontal-pod-autoscaler-sync-period=2s", "--profiling=false"], log=log)
    try:
        yield
    finally:
        stop(proc, 10, kill_timeout=5)
        print(tail(log, 10))


def raw_sample(name: str = "torchserve", **predictor: Any) -> dict[str, Any]:
    isvc = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    isvc["metadata"]["annotations"] = {**(isvc["metadata"].get("annotations") or {}), **RAW}
    isvc["spec"]["predictor"].update(predictor)
    return isvc


def apply(kubectl: Kubectl, namespace: str, isvc: dict[str, Any], check: bool = True):
    return kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(isvc), check=check)


def get(kubectl: Kubectl, namespace: str, kind: str, name: str = PREDICTOR) -> dict[str, Any] | None:
    return kubectl.get("-n", namespace, kind, name)


def having(value: Any, predicate: Any) -> Any:
    """`value` when `predicate(value)` holds, else None (for wait_for)."""
    return value if value is not None and predicate(value) else None


def listed(kubectl: Kubectl, namespace: str, kind: str) -> list[dict[str, Any]]:
    return (kubectl.get("-n", namespace, kind, "-l", LABEL) or {}).get("items", [])


def test_canary_in_raw_mode_is_refused_at_admission_saying_it_needs_knative(
    operator_installed, kubectl: Kubectl, namespace: str
) -> None:
    for prefix in ("serving.kubeflow.org", "serving.kserve.io"):
        isvc = raw_sample(canaryTrafficPercent=10)
        isvc["metadata"]["annotations"] = {f"{prefix}/deploymentMode": "RawDeployment"}
        refused = wait_for(lambda isvc=isvc: having(apply(kubectl, namespace, isvc, check=False),
                                                    lambda done: done.returncode != 0),
                           timeout=30, what="the policy in force")
        assert "spec.predictor.canaryTrafficPercent" in refused.stderr, refused.stderr
        assert "Serverless (Knative) deployment mode" in refused.stderr, refused.stderr
        assert isvc_of(kubectl, namespace) is None
    serverless = raw_sample(canaryTrafficPercent=10)
    serverless["metadata"]["annotations"] = {"serving.kubeflow.org/deploymentMode": "Serverless"}
    kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(serverless))
    kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(raw_sample()))


def test_raw_isvc_runs_as_deployment_replicaset_service_and_hpa_and_delete_removes_them_all(
    operator: OperatorProcess, hpa_controller, kubectl: Kubectl, namespace: str
) -> None:
    apply(kubectl, namespace, raw_sample(minReplicas=1, maxReplicas=3))
    deployment = wait_for(lambda: get(kubectl, namespace, "deployment"), what="the Deployment")
    isvc = isvc_of(kubectl, namespace)
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == isvc["metadata"]["uid"]
    pod = deployment["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["storage-initializer"]
    assert [c["name"] for c in pod["containers"]] == ["kfserving-container"]
    replica_set = wait_for(lambda: next(iter(listed(kubectl, namespace, "replicasets")), None),
                           what="kube-controller-manager's ReplicaSet")
    assert replica_set["metadata"]["ownerReferences"][0]["name"] == PREDICTOR
    wait_for(lambda: listed(kubectl, namespace, "pods"), what="the ReplicaSet's Pod")
    service = wait_for(lambda: get(kubectl, namespace, "service"), what="the Service")
    assert service["spec"]["ports"][0]["port"] == 80 and service["spec"]["ports"][0]["targetPort"] == 8080
    hpa = wait_for(lambda: having(get(kubectl, namespace, "horizontalpodautoscalers.autoscaling"),
                                  lambda h: condition(h, "AbleToScale")),
                   timeout=90, what="the HPA controller's conditions")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert condition(hpa, "AbleToScale")["status"] == "True"
    isvc = wait_for(lambda: having(isvc_of(kubectl, namespace), lambda i: condition(i, "PredictorReady")),
                    what="the isvc's status")
    assert condition(isvc, "PredictorReady")["status"] == "Unknown"  # no kubelet: the Pod stays Pending
    assert kubectl.get("-n", namespace, "services.serving.knative.dev", PREDICTOR) is None

    kubectl("delete", "isvc", "torchserve", "-n", namespace)
    for kind in ("deployment", "service", "horizontalpodautoscalers.autoscaling"):
        wait_for(lambda kind=kind: get(kubectl, namespace, kind) is None, timeout=60, what=f"{kind} gone")
    wait_for(lambda: not listed(kubectl, namespace, "replicasets") and not listed(kubectl, namespace, "pods"),
             timeout=60, what="ReplicaSet and Pods gone")


def test_a_failed_storage_initializer_reaches_the_isvc_conditions_with_its_message(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    isvc = raw_sample()
    isvc["spec"]["predictor"]["pytorch"]["storageUri"] = "gs://no-such-bucket/model"
    apply(kubectl, namespace, isvc)
    pod = wait_for(lambda: next(iter(listed(kubectl, namespace, "pods")), None), what="the predictor's Pod")
    message = "gs://no-such-bucket/model: bucket no-such-bucket not found (404)"
    terminated = {"exitCode": 1, "reason": "Error", "message": message,
                  "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:01Z"}
    init = pod["spec"]["initContainers"][0]
    # Standing in for the kubelet, in this test only: the status a kubelet writes after the init container
    # exited 1 with its termination message.
    status = {"status": {"phase": "Pending", "initContainerStatuses": [{
        "name": init["name"], "image": init["image"], "imageID": "", "ready": False, "restartCount": 0,
        "state": {"terminated": terminated}}]}}
    kubectl("patch", "pod", pod["metadata"]["name"], "-n", namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps(status))
    failed = wait_for(lambda: having(isvc_of(kubectl, namespace),
                                     lambda i: condition(i, "PredictorReady").get("status") == "False"),
                      timeout=60, what="PredictorReady False")
    predictor = condition(failed, "PredictorReady")
    assert "storage-initializer" in predictor["message"] and message in predictor["message"]
    assert condition(failed, "Ready")["status"] == "False"


def test_switching_modes_removes_the_other_modes_objects(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    raw = raw_sample()
    apply(kubectl, namespace, raw)
    wait_for(lambda: get(kubectl, namespace, "deployment"), what="the Deployment")
    serverless = raw_sample()
    serverless["metadata"]["annotations"] = {"serving.kserve.io/deploymentMode": "Serverless"}
    apply(kubectl, namespace, serverless)
    wait_for(lambda: kubectl.get("-n", namespace, "services.serving.knative.dev", PREDICTOR),
             what="the Knative Service")
    for kind in ("deployment", "service", "horizontalpodautoscalers.autoscaling"):
        wait_for(lambda kind=kind: get(kubectl, namespace, kind) is None, what=f"{kind} deleted")
    apply(kubectl, namespace, raw)
    wait_for(lambda: kubectl.get("-n", namespace, "services.serving.knative.dev", PREDICTOR) is None,
             what="the Knative Service deleted")
    wait_for(lambda: get(kubectl, namespace, "deployment"), what="the Deployment again")
