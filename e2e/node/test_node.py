"""The real node: a kubelet, containerd and runc in a network namespace of their own run the images built
here, Services reach their pods through kube-proxy, and stopping the node leaves the host as it was.

When the node cannot start (binaries or images missing, a component failing), these tests fail with the
reason: they never skip. The MNIST example served on the node by the product itself: test_operator_on_node.py.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from e2e.node.node import KUBECTL, RealNode, leftovers, node_identities
from e2e.node.workloads import (
    ECHO_COMMAND,
    ECHO_IMAGE,
    ECHO_MARKER,
    ECHO_PATH,
    apply,
    http_inside,
    service_ip,
    wait_for,
)

NAMESPACE = "default"

pytestmark = pytest.mark.timeout(900)


def test_node_is_ready_with_its_taint_removed_within_60_seconds(node: RealNode) -> None:
    assert node.timings["node Ready"] <= 60, node.timings
    nodes = json.loads(node.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert [n["metadata"]["name"] for n in nodes] == [node.layout.name]
    addresses = {a["type"]: a["address"] for a in nodes[0]["status"]["addresses"]}
    assert addresses["InternalIP"] == str(node.ns.address.ip)
    assert nodes[0]["status"]["nodeInfo"]["containerRuntimeVersion"] == "containerd://2.4.2"


def test_a_deployment_is_scheduled_and_its_service_answers_through_kube_proxy(node: RealNode) -> None:
    labels = {"app": "echo"}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "echo", "namespace": NAMESPACE},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{
                "name": "http", "image": ECHO_IMAGE, "imagePullPolicy": "Never", "command": ECHO_COMMAND,
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
            }]},
        }},
    }
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": NAMESPACE},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    apply(node, deployment, service)
    ip = service_ip(node, "echo")
    assert IPv4Address(ip) in node.layout.service_cidr
    url = f"http://{ip}{ECHO_PATH}"
    _, text = wait_for("the echo Service answering",
                       lambda: (answer := http_inside(node, url))[0] == 200 and answer, 90, node)
    assert ECHO_MARKER in text
    node.kubectl("delete", "deployment,service", "echo", "-n", NAMESPACE, "--wait=true", "--timeout=60s")


def as_component(node: RealNode, kubeconfig: Path, *args: str) -> tuple[int, str]:
    """kubectl with a component's own kubeconfig, inside the node's namespace (where its server is):
    (exit status, stdout + stderr)."""
    done = node.run_inside([str(KUBECTL), f"--kubeconfig={kubeconfig}", *args])
    return done.returncode, done.stdout + done.stderr


def test_each_node_component_runs_as_its_own_least_privileged_identity(node: RealNode) -> None:
    """kubelet system:node:<name> (system:nodes), kube-proxy system:kube-proxy, kube-scheduler
    system:kube-scheduler, kube-controller-manager system:kube-controller-manager (its controllers on their
    ServiceAccounts): as the apiserver authenticates their kubeconfigs, none is in system:masters and none
    may do everything; the raw-mode and Knative workloads of the other modules run with them."""
    expected = node_identities(node.layout.name)
    kubeconfigs = dict(node.components.kubeconfigs)
    kubeconfigs["kube-controller-manager"] = node.control_plane.workdir / "kcm.kubeconfig"
    expected["kube-controller-manager"] = ("system:kube-controller-manager", ())
    assert set(kubeconfigs) == set(expected)
    for component, kubeconfig in kubeconfigs.items():
        status, out = as_component(node, kubeconfig, "auth", "whoami", "-o", "json")
        assert status == 0, (component, out)
        user = json.loads(out)["status"]["userInfo"]
        user_name, groups = expected[component]
        assert user["username"] == user_name, (component, user)
        assert set(user.get("groups") or []) == {*groups, "system:authenticated"}, (component, user)
        status, out = as_component(node, kubeconfig, "auth", "can-i", "*", "*", "--all-namespaces")
        assert (status, out.strip()) == (1, "no"), (component, out)
    _, out = as_component(node, kubeconfigs["kube-proxy"], "auth", "can-i", "list",
                          "endpointslices.discovery.k8s.io", "--all-namespaces")
    assert out.strip() == "yes"  # system:node-proxier, bound to it by Kubernetes' bootstrap policy
    _, out = as_component(node, kubeconfigs["kube-scheduler"], "auth", "can-i", "create", "pods",
                          "--subresource=binding", "-n", NAMESPACE)
    assert out.strip() == "yes"
    controllers = node.kubectl("get", "serviceaccounts", "-n", "kube-system", "-o", "name").stdout.split()
    assert "serviceaccount/deployment-controller" in controllers  # --use-service-account-credentials


def test_the_kubelet_may_change_only_its_own_node_as_node_restriction_admits(node: RealNode) -> None:
    kubelet = node.components.kubeconfigs["kubelet"]
    status, out = as_component(node, kubelet, "auth", "can-i", "list", "secrets", "-n", NAMESPACE)
    assert status == 1 and out.startswith("no"), out  # the Node authorizer: only its pods' secrets, by name
    other = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "another-node"}}
    done = node.run_inside([str(KUBECTL), f"--kubeconfig={kubelet}", "create", "-f", "-"],
                           input=json.dumps(other))
    assert done.returncode != 0 and "forbidden" in done.stderr, done.stderr
    status, out = as_component(node, kubelet, "label", "node", node.layout.name,
                               "node-restriction.kubernetes.io/team=serving")
    assert status != 0 and "node-restriction.kubernetes.io/" in out, out  # NodeRestriction's admission


# --- stop ------------------------------------------------------------------------------------------------


def test_a_running_node_is_what_the_check_after_its_stop_looks_for(node: RealNode) -> None:
    """That stopping the node leaves nothing behind is checked by the ``node`` fixture's teardown
    (conftest.py), on this node, after every test here ran on it; here: that check sees a running node, so
    its empty answer after the stop means something."""
    found = leftovers(node.token)
    assert any(item.startswith("process ") for item in found), found
    assert any(item.startswith("workdir ") for item in found), found
