"""The real node: a kubelet, containerd and runc in a network namespace of their own run the images built
here, Services reach their pods through kube-proxy, and stopping the node leaves the host as it was.

When the node cannot start (binaries or images missing, a component failing), these tests fail with the
reason: they never skip. The MNIST example served on the node by the product itself: test_operator_on_node.py.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address

import pytest

from e2e.node import host
from e2e.node.conftest import start_or_fail
from e2e.node.node import RealNode, leftovers
from e2e.node.workloads import apply, http_inside, service_ip, wait_for

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
    image = "docker.io/torch-isvc/storage-initializer:0.1.0"  # python, without torch: small and quick
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "echo", "namespace": NAMESPACE},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{
                "name": "http", "image": image, "imagePullPolicy": "Never",
                "command": ["python", "-m", "http.server", "8080", "--directory", "/src"],
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
    url = f"http://{ip}/pyproject.toml"
    _, text = wait_for("the echo Service answering",
                       lambda: (answer := http_inside(node, url))[0] == 200 and answer, 90, node)
    assert "torch-isvc" in text
    node.kubectl("delete", "deployment,service", "echo", "-n", NAMESPACE, "--wait=true", "--timeout=60s")


# --- stop ------------------------------------------------------------------------------------------------


def test_stop_leaves_nothing_behind() -> None:
    sysctls = host.read_sysctls()
    fixed_paths = host.existing_fixed_paths()
    node = start_or_fail(("pause",))
    token = node.ns.name.rsplit("-", 1)[1]
    assert leftovers(token), "a running node should be visible to leftovers()"
    node.stop()
    assert leftovers(token) == []
    assert host.read_sysctls() == sysctls
    assert host.existing_fixed_paths() == fixed_paths
