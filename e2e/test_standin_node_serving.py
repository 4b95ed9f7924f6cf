"""The node-backed Knative stand-in's pure functions: what a revision becomes on a real cluster (Knative's
Deployment and private Service), how its pods' state is read, and which revisions keep a replica."""

from __future__ import annotations

from typing import Any

from e2e.standin.node_serving import (
    FAILED,
    PENDING,
    READY,
    REVISION_LABEL,
    revision_deployment,
    revision_service,
    revision_state,
    wanted_revisions,
)

KSVC: dict[str, Any] = {"metadata": {"name": "mnist-predictor-default", "namespace": "models", "uid": "u-1"}}
REVISION = "mnist-predictor-default-00002"


def template(**container: Any) -> dict[str, Any]:
    serving = {"name": "kfserving-container", "image": "torch-isvc/runtime:0.1.0",
               "ports": [{"name": "http1", "containerPort": 8080}],
               "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": 8080}}, **container}
    return {"metadata": {"labels": {"component": "predictor"}, "annotations": {"a": "b"}},
            "spec": {"containers": [serving], "timeoutSeconds": 60,
                     "initContainers": [{"name": "storage-initializer", "image": "x/storage-initializer:1"}]}}


def pod(*, ready: bool = False, init_exit: int | None = None, message: str = "",
        deleting: bool = False) -> dict[str, Any]:
    terminated = {"terminated": {"exitCode": init_exit, "message": message}} if init_exit is not None else {}
    return {"metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z" if deleting else None},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "initContainerStatuses": [{"name": "storage-initializer", "state": terminated}]}}


def test_a_revision_becomes_a_deployment_named_labelled_and_owned_as_knative_makes_it() -> None:
    deployment = revision_deployment(KSVC, REVISION, template())
    metadata = deployment["metadata"]
    assert metadata["name"] == f"{REVISION}-deployment" and metadata["namespace"] == "models"
    assert metadata["labels"] == {
        "component": "predictor", "serving.knative.dev/service": "mnist-predictor-default",
        "serving.knative.dev/configuration": "mnist-predictor-default",
        "serving.knative.dev/revision": REVISION, "app": REVISION}
    assert metadata["ownerReferences"] == [{
        "apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "mnist-predictor-default",
        "uid": "u-1", "controller": True, "blockOwnerDeletion": True}]
    spec = deployment["spec"]
    assert spec["selector"] == {"matchLabels": {REVISION_LABEL: REVISION}}
    assert spec["replicas"] == 1 and spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0}
    pod_spec = spec["template"]["spec"]
    assert "timeoutSeconds" not in pod_spec and pod_spec["terminationGracePeriodSeconds"] == 60
    assert pod_spec["initContainers"][0]["name"] == "storage-initializer"


def test_the_serving_container_keeps_its_name_and_probe_gets_user_port_and_knatives_environment() -> None:
    [container] = revision_deployment(KSVC, REVISION, template(env=[{"name": "A", "value": "1"}])
                                      )["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "kfserving-container"
    assert container["ports"] == [{"name": "user-port", "containerPort": 8080, "protocol": "TCP"}]
    assert container["env"] == [{"name": "A", "value": "1"}, {"name": "PORT", "value": "8080"},
                                {"name": "K_REVISION", "value": REVISION},
                                {"name": "K_CONFIGURATION", "value": "mnist-predictor-default"},
                                {"name": "K_SERVICE", "value": "mnist-predictor-default"}]
    # no periodSeconds: the queue-proxy would poll it every 50 ms while the revision starts; the kubelet's 1 s
    assert container["readinessProbe"] == {"httpGet": {"path": "/v2/health/ready", "port": 8080},
                                           "periodSeconds": 1}


def test_a_readiness_probe_with_its_own_period_keeps_it() -> None:
    timed = template()
    timed["spec"]["containers"][0]["readinessProbe"]["periodSeconds"] = 7
    [container] = revision_deployment(KSVC, REVISION, timed)["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["periodSeconds"] == 7


def test_a_container_without_readiness_probe_gets_knatives_default_tcp_probe_of_the_user_port() -> None:
    bare = template(ports=[{"containerPort": 9000}])
    del bare["spec"]["containers"][0]["readinessProbe"]
    [container] = revision_deployment(KSVC, REVISION, bare)["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"] == {"tcpSocket": {"port": 9000}, "periodSeconds": 1}
    assert container["ports"] == [{"name": "user-port", "containerPort": 9000, "protocol": "TCP"}]


def test_the_private_service_sends_port_80_to_the_user_port_and_speaks_h2c_for_grpc() -> None:
    service = revision_service(KSVC, REVISION, template())
    assert service["metadata"]["name"] == f"{REVISION}-private"
    assert service["spec"] == {"selector": {REVISION_LABEL: REVISION}, "ports": [
        {"name": "http", "protocol": "TCP", "port": 80, "targetPort": "user-port"}]}
    grpc = revision_service(KSVC, REVISION, template(ports=[{"name": "h2c", "containerPort": 8081}]))
    assert grpc["spec"]["ports"][0]["appProtocol"] == "kubernetes.io/h2c"


def test_a_revision_is_ready_with_a_ready_pod_and_failed_with_its_failed_init_containers_message() -> None:
    assert revision_state([pod(ready=True)]) == (READY, "")
    assert revision_state([pod()]) == (PENDING, "")
    assert revision_state([]) == (PENDING, "")
    state, message = revision_state([pod(init_exit=1, message="gs://no-such-bucket: 404\n")])
    assert state == FAILED
    assert message == ("Container failed with: container storage-initializer exited with 1: "
                       "gs://no-such-bucket: 404")
    assert revision_state([pod(init_exit=1, deleting=True)]) == (PENDING, "")


def test_a_restarted_init_container_that_failed_before_still_fails_the_revision() -> None:
    restarted = pod()
    restarted["status"]["initContainerStatuses"][0]["lastState"] = {
        "terminated": {"exitCode": 2, "reason": "Error"}}
    assert revision_state([restarted]) == (
        FAILED, "Container failed with: container storage-initializer exited with 2: Error")


def test_only_the_latest_the_latest_ready_and_routed_revisions_keep_a_replica() -> None:
    ksvc = {"status": {"latestReadyRevisionName": "s-00002",
                       "traffic": [{"revisionName": "s-00001", "percent": 10},
                                   {"revisionName": "s-00002", "percent": 90}]}}
    assert wanted_revisions(ksvc, "s-00003") == {"s-00001", "s-00002", "s-00003"}
    ksvc["status"]["traffic"] = [{"revisionName": "s-00002", "percent": 100}]
    assert wanted_revisions(ksvc, "s-00002") == {"s-00002"}
    assert wanted_revisions({}, None) == set()
