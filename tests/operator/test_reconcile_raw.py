"""`reconcile` in raw deployment mode against the fake cluster: the Deployment, Service and HPA it applies,
the status it reads from the Deployment and its Pods, and a switch between modes leaving nothing behind."""

from __future__ import annotations

from typing import Any

import pytest
from fake_kube import POD, FakeCluster
from isvc_operator.config import parse_config
from isvc_operator.known import (
    DEPLOYMENT,
    HPA,
    INFERENCE_SERVICE,
    KNATIVE_SERVICE,
    SERVICE,
    VIRTUAL_SERVICE,
)
from isvc_operator.raw import render_raw
from test_reconcile import (
    ISVC,
    KSVC,
    NAMESPACE,
    cluster_holding,
    condition,
    config_data,
    knative_reports_ready,
    new_isvc,
    run,
    settle,
)

RAW = {"serving.kubeflow.org/deploymentMode": "RawDeployment"}
PREDICTOR = KSVC  # every predictor object is named {isvc}-predictor-default


def raw_isvc(**annotations: str) -> dict[str, Any]:
    isvc = new_isvc()
    isvc["metadata"]["annotations"] = {**RAW, **annotations}
    return isvc


@pytest.fixture
def cluster() -> FakeCluster:
    return cluster_holding(raw_isvc())


def deployment_reports_available(cluster: FakeCluster, ready: int = 1) -> None:
    """What kube-controller-manager's deployment controller writes (the test stands in for it)."""
    deployment = cluster.get(DEPLOYMENT, PREDICTOR)
    cluster.put(DEPLOYMENT, {**deployment, "status": {
        "observedGeneration": deployment["metadata"]["generation"], "replicas": 1, "readyReplicas": ready,
        "conditions": [{"type": "Available", "status": "True" if ready else "False"},
                       {"type": "Progressing", "status": "True"}]}})


def failing_pod(message: str) -> dict[str, Any]:
    """A predictor pod whose storage initializer exited 1 (what the kubelet reports), restarting."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "torchserve-predictor-default-5d8f7-abcde", "namespace": NAMESPACE,
                         "labels": {"serving.kubeflow.org/inferenceservice": "torchserve",
                                    "component": "predictor"}},
            "status": {"phase": "Pending", "initContainerStatuses": [{
                "name": "storage-initializer", "ready": False, "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": message}}}]}}


def test_raw_mode_applies_a_deployment_service_and_hpa_and_no_ksvc(cluster, known) -> None:
    assert run(cluster, known) == "changed"
    assert cluster.writes() == ["apply_deployment", "apply_service", "apply_hpa", "apply_status"]
    desired = render_raw(cluster.get(INFERENCE_SERVICE, ISVC), parse_config(config_data()))
    for kind in (DEPLOYMENT, SERVICE, HPA):
        assert cluster.get(kind, PREDICTOR)["spec"] == desired[kind]["spec"]
    assert cluster.get(KNATIVE_SERVICE, PREDICTOR) is None
    assert condition(cluster, "PredictorReady")["reason"] == "PredictorReconciling"


def test_reconciling_an_unchanged_raw_isvc_again_calls_no_api(cluster, known) -> None:
    run(cluster, known)
    deployment_reports_available(cluster)
    settle(cluster, known)
    cluster.calls.clear()
    cluster.list_all()
    assert run(cluster, cluster.known()) == "unchanged"
    assert run(cluster, cluster.known()) == "unchanged"
    assert cluster.pending == []


def test_an_available_deployment_makes_the_isvc_ready_at_its_url_through_the_virtual_service(cluster,
                                                                                            known) -> None:
    run(cluster, known)
    deployment_reports_available(cluster)
    settle(cluster, known)
    status = cluster.get(INFERENCE_SERVICE, ISVC)["status"]
    assert condition(cluster, "Ready")["status"] == "True"
    assert status["url"] == f"http://torchserve.{NAMESPACE}.example.com"
    host = f"torchserve-predictor-default.{NAMESPACE}.svc.cluster.local"
    assert status["components"]["predictor"]["url"] == f"http://{host}"
    [route] = cluster.get(VIRTUAL_SERVICE, ISVC)["spec"]["http"]
    assert route["route"] == [{"destination": {"host": host, "port": {"number": 80}}, "weight": 100}]
    assert [event[2] for event in cluster.events] == ["InferenceServiceReady"]


def test_ingress_mode_none_gives_the_services_url(cluster, known) -> None:
    cluster.put_config(config_data(mode="none"))
    cluster.list_all()
    known = cluster.known()
    run(cluster, known)
    deployment_reports_available(cluster)
    settle(cluster, known)
    status = cluster.get(INFERENCE_SERVICE, ISVC)["status"]
    assert status["url"] == f"http://torchserve-predictor-default.{NAMESPACE}.svc.cluster.local"
    assert condition(cluster, "Ready")["status"] == "True"


def test_a_failing_storage_initializer_reaches_the_conditions_with_its_termination_message(cluster,
                                                                                           known) -> None:
    run(cluster, known)
    settle(cluster, known)
    cluster.put(POD, failing_pod("gs://no-such-bucket/model: 404 bucket not found"))
    settle(cluster, known)
    predictor = condition(cluster, "PredictorReady")
    assert predictor["status"] == "False" and predictor["reason"] == "ContainerFailed"
    assert "storage-initializer" in predictor["message"]
    assert "gs://no-such-bucket/model: 404 bucket not found" in predictor["message"]
    assert condition(cluster, "Ready")["status"] == "False"
    cluster.remove(POD, (NAMESPACE, "torchserve-predictor-default-5d8f7-abcde"))
    settle(cluster, known)
    assert condition(cluster, "PredictorReady")["status"] == "Unknown"


def test_switching_to_knative_deletes_the_raw_objects_and_back_deletes_the_ksvc(cluster, known) -> None:
    run(cluster, known)
    deployment_reports_available(cluster)
    settle(cluster, known)
    isvc = cluster.get(INFERENCE_SERVICE, ISVC)
    isvc["metadata"]["annotations"] = {"serving.kserve.io/deploymentMode": "Serverless"}
    cluster.put(INFERENCE_SERVICE, isvc)
    settle(cluster, known)
    assert [cluster.get(kind, PREDICTOR) for kind in (DEPLOYMENT, SERVICE, HPA)] == [None, None, None]
    assert cluster.get(KNATIVE_SERVICE, PREDICTOR) is not None
    knative_reports_ready(cluster)
    settle(cluster, known)
    assert condition(cluster, "Ready")["status"] == "True"
    isvc = cluster.get(INFERENCE_SERVICE, ISVC)
    isvc["metadata"]["annotations"] = RAW
    cluster.put(INFERENCE_SERVICE, isvc)
    settle(cluster, known)
    assert cluster.get(KNATIVE_SERVICE, PREDICTOR) is None
    assert all(cluster.get(kind, PREDICTOR) is not None for kind in (DEPLOYMENT, SERVICE, HPA))


def test_an_object_of_the_other_mode_owned_by_someone_else_is_left_alone(cluster, known) -> None:
    labels = {"serving.kubeflow.org/inferenceservice": "torchserve"}
    metadata = {"name": PREDICTOR[1], "namespace": NAMESPACE, "labels": labels}
    cluster.put(KNATIVE_SERVICE, {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "spec": {},
                                  "metadata": metadata})
    settle(cluster, known)
    run(cluster, known)
    assert "delete_ksvc" not in cluster.calls and cluster.get(KNATIVE_SERVICE, PREDICTOR) is not None


def test_an_external_autoscaler_class_removes_the_hpa_and_sets_the_replicas(cluster, known) -> None:
    run(cluster, known)
    settle(cluster, known)
    isvc = cluster.get(INFERENCE_SERVICE, ISVC)
    isvc["metadata"]["annotations"] = {**RAW, "serving.kserve.io/autoscalerClass": "external"}
    cluster.put(INFERENCE_SERVICE, isvc)
    settle(cluster, known)
    assert cluster.get(HPA, PREDICTOR) is None
    assert cluster.get(DEPLOYMENT, PREDICTOR)["spec"]["replicas"] == 1


def test_a_canary_in_raw_mode_is_a_render_error_and_nothing_is_applied(cluster, known) -> None:
    isvc = cluster.get(INFERENCE_SERVICE, ISVC)
    isvc["spec"]["predictor"]["canaryTrafficPercent"] = 10
    cluster.put(INFERENCE_SERVICE, isvc)
    cluster.list_all()
    assert run(cluster, cluster.known()) == "render_error"
    assert cluster.writes() == ["apply_status"]
    message = condition(cluster, "PredictorReady")["message"]
    assert "canaryTrafficPercent" in message and "Knative" in message


def test_the_configmaps_default_mode_makes_an_unannotated_isvc_raw(cluster) -> None:
    data = config_data()
    data["deploy"] = '{"defaultDeploymentMode": "RawDeployment"}'
    cluster.put_config(data)
    isvc = cluster.get(INFERENCE_SERVICE, ISVC)
    isvc["metadata"]["annotations"] = {}
    cluster.put(INFERENCE_SERVICE, isvc)
    cluster.list_all()
    run(cluster, cluster.known())
    assert cluster.get(DEPLOYMENT, PREDICTOR) is not None and cluster.get(KNATIVE_SERVICE, PREDICTOR) is None


def test_an_unknown_mode_is_a_render_error_naming_the_annotation_and_applies_nothing(cluster) -> None:
    cluster.put(INFERENCE_SERVICE, raw_isvc(**{"serving.kubeflow.org/deploymentMode": "Raw"}))
    cluster.list_all()
    assert run(cluster, cluster.known()) == "render_error"
    assert cluster.writes() == ["apply_status"]
    assert "serving.kubeflow.org/deploymentMode" in condition(cluster, "PredictorReady")["message"]
