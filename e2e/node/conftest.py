"""Fixtures of the real node's tests: ONE node for all of them (every image its tests run imported once),
the GCS emulator inside its namespace, and the product installed on it as users install it. Package scope:
the node is stopped once the last test of e2e/node/ has run, not kept through the rest of the session.

- ``node`` (package): the started :class:`e2e.node.node.RealNode`; the tests fail, never skip, with the
  reason when it cannot start. Its teardown checks that stopping it (with everything the tests ran on it)
  left nothing behind: no process, mount, cgroup, namespace or workdir of the node, the host's sysctls and
  the kubelet's fixed paths as before it started (a failure there is reported as an error of the last node
  test's teardown).
- ``gcs_in_node`` (package): gcp-storage-emulator in the node's namespace holding the MNIST model store at
  the example's gs:// URI; its endpoint.
- ``operator_on_node`` (package): Knative Serving's and Istio's real CRDs (no Knative webhook or controllers:
  ``e2e/standin/node_serving.py`` plays the controllers), ``crds/`` applied, ``deploy/`` created; the operator
  image running as the Deployment of deploy/operator.yaml (2 replicas, its ServiceAccount, its probes), with
  two settings of a cluster without Knative's networking and Istio (ingress mode none; DEBUG logs, so that
  no-op reconciles are seen), and the storage initializers pointed at the emulator (below).

How a storage initializer on the node reaches the emulator: in a user's cluster it reaches GCS itself. Here
a MutatingAdmissionPolicy (built into the apiserver, as a cluster admin would add one) sets
STORAGE_EMULATOR_HOST on every init container named storage-initializer, in the pod the ReplicaSet
creates. The operator and its rendered Deployment are left exactly as they are.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from e2e import REPO_ROOT
from e2e.installation import OPERATOR_NAMESPACE
from e2e.knative.webhook import install_crds
from e2e.localkube import Kubectl
from e2e.node import host
from e2e.node.components import NodeError
from e2e.node.node import RealNode, leftovers, start_node
from e2e.node.workloads import emulator_policy, gcs_emulator, node_kubectl
from e2e.processes import install_signal_handlers

NODE_IMAGES = ("pause", "storage-initializer", "runtime", "operator")
OPERATOR_DEPLOYMENT = "torch-isvc-operator"
OPERATOR_LABEL = "app.kubernetes.io/name=torch-isvc-operator"
LEASE = "torch-isvc-operator"


def start_or_fail(images: tuple[str, ...]) -> RealNode:
    try:
        return start_node(images=images)
    except (NodeError, OSError) as exc:
        pytest.fail(f"the real node did not start: {exc}", pytrace=False)
    except Exception as exc:  # e.g. CalledProcessError of a missing tool: still a failure with the reason
        pytest.fail(f"the real node did not start: {type(exc).__name__}: {exc}", pytrace=False)


@pytest.fixture(scope="package")
def node() -> Iterator[RealNode]:
    install_signal_handlers()
    sysctls, fixed_paths = host.read_sysctls(), host.existing_fixed_paths()
    started = start_or_fail(NODE_IMAGES)
    print(f"node timings: {started.timings}")
    try:
        yield started
    finally:
        started.stop()
    assert leftovers(started.token) == [], "stopping the node left these behind"
    assert host.read_sysctls() == sysctls, "stopping the node did not restore the host's sysctls"
    assert host.existing_fixed_paths() == fixed_paths, "stopping the node left the kubelet's fixed paths"


@pytest.fixture(scope="package")
def gcs_in_node(node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with gcs_emulator(node, tmp_path_factory.mktemp("gcs")) as endpoint:
        yield endpoint


def operator_manifest() -> list[dict[str, Any]]:
    """deploy/operator.yaml with the two settings of these tests: ingress mode none (no Istio here) and the
    operator's DEBUG log (its no-op reconciles are logged)."""
    documents = [d for d in yaml.safe_load_all((REPO_ROOT / "deploy" / "operator.yaml").read_text()) if d]
    for document in documents:
        if document["kind"] == "ConfigMap":
            document["data"]["ingress"] = json.dumps({"mode": "none"})
        if document["kind"] == "Deployment":
            [container] = document["spec"]["template"]["spec"]["containers"]
            container["env"].append({"name": "ISVC_OPERATOR_LOG_LEVEL", "value": "DEBUG"})
    return documents


@dataclass
class OperatorOnNode:
    """The operator's Deployment on the node, as the tests look at it."""

    kubectl: Kubectl
    ready_seconds: float

    def lease(self) -> dict[str, Any] | None:
        return self.kubectl.get("-n", OPERATOR_NAMESPACE, "leases.coordination.k8s.io", LEASE)

    def holder(self) -> str:
        """The pod whose replica holds the Lease ("" when none): identities are `<pod name>_<suffix>`."""
        identity = ((self.lease() or {}).get("spec") or {}).get("holderIdentity") or ""
        return identity.rsplit("_", 1)[0]

    def pods(self) -> list[dict[str, Any]]:
        found = self.kubectl.get("-n", OPERATOR_NAMESPACE, "pods", "-l", OPERATOR_LABEL) or {}
        return [p for p in found.get("items", []) if not p["metadata"].get("deletionTimestamp")]

    def ready_pods(self) -> list[str]:
        return [p["metadata"]["name"] for p in self.pods()
                if any(c["type"] == "Ready" and c["status"] == "True"
                       for c in (p.get("status") or {}).get("conditions") or [])]

    def log(self, pod: str) -> str:
        return self.kubectl("logs", "-n", OPERATOR_NAMESPACE, pod, check=False).stdout

    def diagnostics(self) -> str:
        pods = self.kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-o", "wide", check=False).stdout
        events = self.kubectl("get", "events", "-n", OPERATOR_NAMESPACE, check=False).stdout
        logs = "\n".join(f"--- {p['metadata']['name']} ---\n{self.log(p['metadata']['name'])[-3000:]}"
                         for p in self.pods())
        return f"{pods}\n{events[-3000:]}\n{logs}"


@pytest.fixture(scope="package")
def operator_on_node(node: RealNode, gcs_in_node: str) -> OperatorOnNode:
    kubectl = node_kubectl(node)
    began = time.monotonic()
    install_crds(kubectl)  # Knative's and Istio's, as on a KServe cluster: the operator watches ksvcs
    kubectl.install(REPO_ROOT / "crds")
    documents = [*operator_manifest(), *emulator_policy(gcs_in_node)]
    # Created, not applied: no last-applied configuration names these tests' two settings, so the
    # walkthrough's later `kubectl apply` of deploy/ (as `make demo` installs it) changes only what deploy/
    # says and leaves the DEBUG log in place; the operator's Deployment is not rolled out a second time.
    kubectl("create", "-f", "-", input="\n---\n".join(json.dumps(d) for d in documents))
    kubectl("apply", "-f", str(REPO_ROOT / "deploy" / "admission-policy.yaml"))
    operator = OperatorOnNode(kubectl, 0.0)
    deadline = time.monotonic() + 180
    while not (len(operator.ready_pods()) == 2 and operator.holder() in operator.ready_pods()):
        if time.monotonic() > deadline:
            pytest.fail(f"the operator's 2 replicas not ready with a Lease holder within 180 s\n"
                        f"{operator.diagnostics()}\n{node.components.logs(20)}")
        time.sleep(0.5)
    operator.ready_seconds = time.monotonic() - began
    print(f"operator Deployment applied -> 2 replicas ready, one leading: {operator.ready_seconds:.1f} s")
    return operator
