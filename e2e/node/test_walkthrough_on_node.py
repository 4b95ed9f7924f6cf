"""`make demo`'s walkthrough with its pods on the real node, and the Knative path checked on the same
isvc: one apply of the examples' torchserve.yaml, in the default Knative mode.

The walkthrough (:class:`~e2e.demo.Walkthrough` and :class:`~e2e.demo.Steps`, as ``make demo`` runs them on
this session's node, ``pods: real kubelet on node ...``) installs deploy/'s operator Deployment from the
operator image, applies torchserve.yaml unmodified and passes every step before the canary (apply, READY
True, URL, the seed's curl for predict and explain through the ingress). The operator reconciles the isvc into
a Knative Service, whose revisions :class:`~e2e.standin.node_serving.NodeServingStandin` makes into what
Knative's controllers make: a Deployment ``{revision}-deployment`` and a Service per revision, run by the real
kube-controller-manager, kube-scheduler and kubelet. The stand-in ingress (Istio's gateway) reaches the
revision's Service at its ClusterIP from the host through the node's veth (kube-proxy's rules). The canary
step is left to the demo on processes (e2e/test_demo.py): its second predictor requests one more CPU than this
2-CPU node has.

The tests share that one isvc and run in file order: the spec change makes a second revision, the last test
deletes the isvc. This module comes last among the node's tests (file order): its install re-applies deploy/
over the operator Deployment the other modules configured. When the node cannot start, they fail with the
reason.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

import httpx
import pytest
import yaml

from e2e import REPO_ROOT
from e2e.demo import NAMESPACE, NODE, Steps, Walkthrough, mnist_request, pods_mode
from e2e.inference_services import condition, isvc_of
from e2e.localkube import Kubectl
from e2e.node.node import SERVICE_CIDR, RealNode
from e2e.node.workloads import (
    ECHO_COMMAND,
    ECHO_IMAGE,
    ECHO_MARKER,
    ECHO_PATH,
    SMALL_RESOURCES,
    uids_of,
    wait_for,
    with_bad_storage_uri,
)
from e2e.standin.ingress import REVISION_HEADER, Ingress
from e2e.standin.node_serving import (
    CONFIGURATION_LABEL,
    REVISION_LABEL,
    SERVICE_LABEL,
    NodeServingStandin,
    deployment_name,
    service_name,
)

ISVC = "torchserve"
KSVC = f"{ISVC}-predictor-default"
FIRST, SECOND = f"{KSVC}-00001", f"{KSVC}-00002"
RUNTIME_UID = 65532
WALKTHROUGH_STEPS = ["apply", "READY True", "URL", "predict", "explain"]

pytestmark = pytest.mark.timeout(900)


def example(name: str = ISVC) -> dict[str, Any]:
    """examples/mnist/torchserve.yaml as it is (Knative mode, the default), in the walkthrough's namespace."""
    isvc = yaml.safe_load((REPO_ROOT / "examples" / "mnist" / "torchserve.yaml").read_text())
    isvc["metadata"].update(name=name, namespace=NAMESPACE)
    return isvc


def routed(ksvc: dict[str, Any]) -> list[tuple[str, int]]:
    """The revisions that get traffic in the ksvc's status, with their percents."""
    return [(t["revisionName"], t["percent"]) for t in (ksvc.get("status") or {}).get("traffic") or []
            if t.get("percent")]


@dataclass
class Answer:
    status: int
    body: str
    revision: str


@dataclass
class KnativeOnNode:
    """The walkthrough's environment on the node, once its steps have run on the one isvc."""

    walkthrough: Walkthrough
    kubectl: Kubectl
    standin: NodeServingStandin
    ingress: Ingress
    request: bytes
    steps: Steps
    said: list[str]
    first: Answer
    first_answer_seconds: float

    def predict(self) -> Answer:
        """The MNIST request through the ingress, to the isvc's host (its status.url, as the seed's curl)."""
        host = self.walkthrough.service_hostname(ISVC)
        try:
            answer = httpx.post(f"{self.ingress.url}/v1/models/{ISVC}:predict", content=self.request,
                                headers={"Host": host, "Content-Type": "application/json"}, timeout=150,
                                trust_env=False)
        except httpx.HTTPError as exc:
            return Answer(0, repr(exc), "")
        return Answer(answer.status_code, answer.text, answer.headers.get(REVISION_HEADER, ""))

    def ksvc(self) -> dict[str, Any]:
        return self.kubectl.get("-n", NAMESPACE, "ksvc", KSVC) or {}


@pytest.fixture(scope="module")
def knative(node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnativeOnNode]:
    """The walkthrough started on the node and its steps before the canary run (the checks are recorded, the
    tests assert them); then the first answer through the ingress, as a Knative revision's."""
    lines: list[str] = []
    walkthrough = Walkthrough(tmp_path_factory.mktemp("walkthrough"), say=lines.append, node=node)
    try:
        walkthrough.start()
        assert isinstance(walkthrough.standin, NodeServingStandin) and walkthrough.ingress is not None
        said: list[str] = []
        request = mnist_request(walkthrough.workdir)
        steps = Steps(walkthrough, request, say=said.append)
        began = time.monotonic()
        for step in (steps.create, steps.ready, steps.predict, steps.explain):
            step()
        served = KnativeOnNode(walkthrough, walkthrough.kubectl, walkthrough.standin, walkthrough.ingress,
                               request.read_bytes(), steps, said, Answer(0, "", ""), 0.0)
        served.first = served.predict()
        served.first_answer_seconds = time.monotonic() - began
        print(f"Knative-mode isvc applied -> walkthrough steps passed and answered through the ingress: "
              f"{served.first_answer_seconds:.1f} s", file=sys.stderr)
        yield served
    finally:
        walkthrough.stop()
        print("\n".join(lines))


def test_the_walkthrough_on_the_node_passes_every_step_before_the_canary(
    node: RealNode, knative: KnativeOnNode
) -> None:
    mode, line = pods_mode("auto", None, node.layout.name)
    assert mode == NODE and line.startswith("pods: real kubelet on node tisvc-node-")
    failed = [f"{c.name}: {c.detail}" for c in knative.steps.checks if not c.ok]
    assert not failed, "\n".join(failed + knative.said[-6:] + [knative.walkthrough.diagnose()])
    assert [c.name for c in knative.steps.checks] == WALKTHROUGH_STEPS


def test_the_example_isvc_in_knative_mode_answers_through_the_ingress_from_a_real_pod_as_uid_65532(
    node: RealNode, knative: KnativeOnNode
) -> None:
    assert json.loads(knative.first.body) == {"predictions": [2]}
    assert knative.first.revision == FIRST
    assert uids_of(node, b"isvc_runtime") == {RUNTIME_UID}
    kubectl = knative.kubectl
    ksvc = knative.ksvc()
    deployment = kubectl.get("-n", NAMESPACE, "deployment", deployment_name(FIRST))
    labels = deployment["metadata"]["labels"]
    assert (labels[SERVICE_LABEL], labels[CONFIGURATION_LABEL], labels[REVISION_LABEL]) == (KSVC, KSVC, FIRST)
    [owner] = deployment["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Service", KSVC, ksvc["metadata"]["uid"])
    [pod] = kubectl.get("-n", NAMESPACE, "pods", "-l", f"{REVISION_LABEL}={FIRST}")["items"]
    assert pod["spec"]["nodeName"] == node.layout.name
    [container] = pod["spec"]["containers"]  # no queue-proxy
    assert container["name"] == "kfserving-container" and container["image"] == "torch-isvc/runtime:0.1.0"
    assert {e["name"]: e.get("value") for e in container["env"]}["K_REVISION"] == FIRST
    [init] = pod["status"]["initContainerStatuses"]
    assert init["name"] == "storage-initializer" and init["state"]["terminated"]["exitCode"] == 0
    service = kubectl.get("-n", NAMESPACE, "service", service_name(FIRST))
    assert IPv4Address(service["spec"]["clusterIP"]) in SERVICE_CIDR
    assert knative.standin.endpoint(NAMESPACE, FIRST) == f"http://{service['spec']['clusterIP']}:80"
    isvc = isvc_of(kubectl, NAMESPACE, ISVC)
    assert condition(isvc, "Ready").get("status") == "True"
    assert ksvc["status"]["url"] == f"http://{KSVC}.{NAMESPACE}.example.com"
    header, row = kubectl("get", "isvc", ISVC, "-n", NAMESPACE).stdout.splitlines()[:2]
    assert dict(zip(header.split(), row.split(), strict=False))["READY"] == "True"


def test_a_spec_change_makes_a_second_revision_moves_the_traffic_to_it_and_scales_the_first_to_zero(
    node: RealNode, knative: KnativeOnNode
) -> None:
    kubectl = knative.kubectl
    began = time.monotonic()
    kubectl("patch", "isvc", ISVC, "-n", NAMESPACE, "--type=merge", "-p",
            json.dumps({"spec": {"predictor": {"pytorch": {"resources": SMALL_RESOURCES}}}}))
    wait_for("the traffic on the second revision", lambda: routed(knative.ksvc()) == [(SECOND, 100)],
             180, node, NAMESPACE)
    knative.ingress.update_routes()  # its routes are re-read every 0.3 s: not wait for the next round
    answer = knative.predict()
    print(f"spec change -> traffic on the second revision: {time.monotonic() - began:.1f} s", file=sys.stderr)
    assert (answer.status, answer.revision) == (200, SECOND), answer
    assert json.loads(answer.body) == {"predictions": [2]}
    [pod] = kubectl.get("-n", NAMESPACE, "pods", "-l", f"{REVISION_LABEL}={SECOND}")["items"]
    assert pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "100m"
    first = deployment_name(FIRST)
    wait_for("the first revision's Deployment at 0 replicas and its pod gone",
             lambda: kubectl.get("-n", NAMESPACE, "deployment", first)["spec"]["replicas"] == 0
             and not kubectl.get("-n", NAMESPACE, "pods", "-l", f"{REVISION_LABEL}={FIRST}")["items"],
             90, node, NAMESPACE)
    assert (f"{NAMESPACE}/{FIRST}", 0) in knative.standin.scaled
    assert kubectl.get("-n", NAMESPACE, "deployment", deployment_name(SECOND))["spec"]["replicas"] == 1


def echo_service(env: str) -> dict[str, Any]:
    """A Knative Service of the node's small HTTP server (ECHO_IMAGE); ``env`` makes each template
    different."""
    return {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "echo", "namespace": NAMESPACE},
        "spec": {"template": {"spec": {"containers": [{
            "name": "http", "image": ECHO_IMAGE, "command": ECHO_COMMAND,
            "env": [{"name": "VERSION", "value": env}],
            "ports": [{"containerPort": 8080}],
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
        }]}}},
    }


def test_a_revision_scaled_to_zero_is_scaled_back_up_when_the_traffic_names_it_again(
    node: RealNode, knative: KnativeOnNode
) -> None:
    kubectl = knative.kubectl

    def get(path: str) -> Answer:
        knative.ingress.update_routes()
        answer = httpx.get(f"{knative.ingress.url}{path}", headers={"Host": f"echo.{NAMESPACE}.example.com"},
                           timeout=150, trust_env=False)
        return Answer(answer.status_code, answer.text, answer.headers.get(REVISION_HEADER, ""))

    def echo() -> dict[str, Any]:
        return kubectl.get("-n", NAMESPACE, "ksvc", "echo") or {}

    def replicas(revision: str) -> int:
        return int(kubectl.get("-n", NAMESPACE, "deployment", deployment_name(revision))["spec"]["replicas"])

    kubectl("apply", "-f", "-", input=json.dumps(echo_service("1")))
    wait_for("echo-00001 routed", lambda: routed(echo()) == [("echo-00001", 100)], 90, node, NAMESPACE)
    first = get(ECHO_PATH)
    assert (first.status, first.revision) == (200, "echo-00001"), first
    kubectl("apply", "-f", "-", input=json.dumps(echo_service("2")))
    wait_for("echo-00002 routed and echo-00001 at 0 replicas",
             lambda: routed(echo()) == [("echo-00002", 100)] and replicas("echo-00001") == 0, 90, node,
             NAMESPACE)
    began = time.monotonic()
    kubectl("patch", "ksvc", "echo", "-n", NAMESPACE, "--type=merge", "-p",
            json.dumps({"spec": {"traffic": [{"revisionName": "echo-00001", "percent": 100}]}}))
    wait_for("echo-00001 routed again and at 1 replica",
             lambda: routed(echo()) == [("echo-00001", 100)] and replicas("echo-00001") == 1, 60, node,
             NAMESPACE)
    answer = get(ECHO_PATH)  # held by the ingress until the revision's pod is ready again
    print(f"a revision at 0 replicas named again -> its answer: {time.monotonic() - began:.1f} s",
          file=sys.stderr)
    assert (answer.status, answer.revision) == (200, "echo-00001"), answer
    assert ECHO_MARKER in answer.body
    assert replicas("echo-00002") == 1  # the latest revision keeps its replica
    assert (f"{NAMESPACE}/echo-00001", 1) in knative.standin.scaled
    kubectl("delete", "ksvc", "echo", "-n", NAMESPACE)


def test_a_bad_storage_uri_fails_the_revision_with_the_init_containers_message(
    node: RealNode, knative: KnativeOnNode
) -> None:
    kubectl = knative.kubectl
    began = time.monotonic()
    kubectl("apply", "-f", "-", input=json.dumps(with_bad_storage_uri(example())))
    ksvc = wait_for("the broken ksvc Ready False",
                    lambda: (k := kubectl.get("-n", NAMESPACE, "ksvc", "broken-predictor-default"))
                    and condition(k, "Ready").get("status") == "False" and k, 60, node, NAMESPACE)
    print(f"bad storageUri -> ksvc RevisionFailed: {time.monotonic() - began:.1f} s", file=sys.stderr)
    ready = condition(ksvc, "Ready")
    assert ready["reason"] == "RevisionFailed", ready
    assert "Container failed with: container storage-initializer exited with" in ready["message"], ready
    assert "no-such-bucket" in ready["message"], ready
    isvc = wait_for("the broken isvc not Ready",
                    lambda: (i := isvc_of(kubectl, NAMESPACE, "broken"))
                    and condition(i, "Ready").get("status") == "False" and i, 30, node, NAMESPACE)
    assert "no-such-bucket" in json.dumps(isvc["status"]["conditions"])
    kubectl("delete", "isvc", "broken", "-n", NAMESPACE)


def test_kubectl_delete_isvc_removes_the_ksvc_and_its_revisions_deployments_services_and_pods(
    node: RealNode, knative: KnativeOnNode
) -> None:
    kubectl = knative.kubectl
    kubectl("delete", "isvc", ISVC, "-n", NAMESPACE)
    wait_for("the ksvc gone", lambda: kubectl.get("-n", NAMESPACE, "ksvc", KSVC) is None, 60, node, NAMESPACE)
    selector = f"{SERVICE_LABEL}={KSVC}"
    wait_for("the revisions' Deployments, Services, ReplicaSets and Pods gone",
             lambda: not any(kubectl.get("-n", NAMESPACE, kind, "-l", selector)["items"]
                             for kind in ("deployments", "services", "replicasets", "pods")),
             90, node, NAMESPACE)
    assert uids_of(node, b"isvc_runtime") == set()
