"""The real node: a kubelet, containerd and runc in a network namespace of their own run the images built
here, Services reach their pods through kube-proxy, and stopping the node leaves the host as it was.

When the node cannot start (binaries or images missing, a component failing), these tests fail with the
reason: they never skip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.node import host
from e2e.node.components import NodeError, in_namespace
from e2e.node.node import RealNode, leftovers, start_node

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SEED_ISVC = REPO_ROOT / "examples" / "mnist" / "torchserve.yaml"
SEED_REQUEST = REPO_ROOT.parent / "shared" / "data" / "requests" / "v1" / "mnist.json"
SHARED_SEED_REQUEST = Path("/work/shared/data/requests/v1/mnist.json")
RUNTIME_UID = 65532
NAMESPACE = "default"

pytestmark = pytest.mark.timeout(900)


def _start(images: tuple[str, ...]) -> RealNode:
    try:
        return start_node(images=images)
    except (NodeError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"the real node did not start: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def node() -> Iterator[RealNode]:
    started = _start(("pause", "storage-initializer", "runtime"))
    try:
        yield started
    finally:
        started.stop()


def apply(node: RealNode, *documents: dict[str, Any]) -> None:
    node.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in documents))


def wait_for(what: str, probe: Any, timeout: float, node: RealNode, namespace: str = NAMESPACE) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.25)
    pods = node.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
    events = node.kubectl("get", "events", "-n", namespace, check=False).stdout
    pytest.fail(f"{what} not within {timeout:.0f} s\n{pods}\n{events[-3000:]}\n{node.components.logs(20)}")


def service_ip(node: RealNode, name: str, namespace: str = NAMESPACE) -> str:
    return node.kubectl("get", "service", name, "-n", namespace, "-o", "jsonpath={.spec.clusterIP}").stdout


def http_inside(node: RealNode, url: str, body: bytes | None = None) -> tuple[int, str]:
    """A request from inside the node's namespace (where ClusterIPs are served by kube-proxy's rules)."""
    script = (
        "import sys, urllib.request\n"
        "data = sys.stdin.buffer.read() or None\n"
        "headers = {'Content-Type': 'application/json'}\n"
        "request = urllib.request.Request(sys.argv[1], data=data, headers=headers)\n"
        "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
        "try:\n"
        "    with opener.open(request, timeout=5) as answer:\n"
        "        print(answer.status); print(answer.read().decode())\n"
        "except Exception as exc:\n"
        "    print(0); print(repr(exc))\n"
    )
    done = subprocess.run(in_namespace(node.ns, [sys.executable, "-c", script, url]), input=body or b"",
                          capture_output=True, timeout=30, check=False)
    status, _, text = done.stdout.decode(errors="replace").partition("\n")
    return int(status or 0), text.strip()


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


# --- the seed's model served by the runtime image, fetched by the storage-initializer image ------------


@pytest.fixture(scope="module")
def gcs_in_node(node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """gcp-storage-emulator inside the node's namespace, holding the seed's MNIST model store."""
    store = tmp_path_factory.mktemp("store")
    build = REPO_ROOT / "examples" / "mnist" / "build_model_store.py"
    subprocess.run([sys.executable, str(build), str(store)], check=True, capture_output=True)
    endpoint = f"http://{node.ns.address.ip}:9023"
    log = open(tmp_path_factory.mktemp("gcs") / "gcs.log", "wb")  # noqa: SIM115 - closed below
    emulator = subprocess.Popen(
        in_namespace(node.ns, [str(VENV_BIN / "gcp-storage-emulator"), "start", "--host",
                               str(node.ns.address.ip), "--port", "9023", "-M", "-q"]),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        deadline = time.monotonic() + 30
        while True:
            try:
                client = storage.Client(project="seed", credentials=AnonymousCredentials(),
                                        client_options={"api_endpoint": endpoint})
                bucket = client.create_bucket("kfserving-examples")
                break
            except Exception:
                if time.monotonic() > deadline or emulator.poll() is not None:
                    raise
                time.sleep(0.2)
        for path in sorted(p for p in store.rglob("*") if p.is_file()):
            key = f"models/torchserve/image_classifier/{path.relative_to(store).as_posix()}"
            bucket.blob(key).upload_from_filename(path)
        yield endpoint
    finally:
        os.killpg(emulator.pid, 15)
        emulator.wait(timeout=10)
        log.close()


def seed_predictor(namespace: str, emulator: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The seed's InferenceService rendered by the operator; its ksvc's pod template as a Deployment."""
    from isvc_operator.config import default_config
    from isvc_operator.render import render_knative_service

    isvc = yaml.safe_load(SEED_ISVC.read_text())
    isvc["metadata"].update(namespace=namespace, uid="00000000-0000-0000-0000-000000000017")
    template = render_knative_service(isvc, default_config())["spec"]["template"]
    pod = template["spec"]
    for init in pod["initContainers"]:
        init.setdefault("env", []).append({"name": "STORAGE_EMULATOR_HOST", "value": emulator})
    name = f"{isvc['metadata']['name']}-predictor-default"
    labels = {**template["metadata"]["labels"], "app": name}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": labels}, "spec": pod}},
    }
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }
    return deployment, service


def runtime_uids(node: RealNode) -> set[int]:
    """UIDs of the runtime processes running in the node's cgroups (seen from the host's /proc)."""
    uids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            cgroup = (proc / "cgroup").read_text()
            status = (proc / "status").read_text()
        except OSError:
            continue
        if b"isvc_runtime" in cmdline and node.layout.cgroup_root in cgroup:
            uids |= {int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:")}
    return uids


def test_runtime_image_serves_the_seed_model_as_uid_65532_through_a_service(
    node: RealNode, gcs_in_node: str
) -> None:
    request = (SHARED_SEED_REQUEST if SHARED_SEED_REQUEST.exists() else SEED_REQUEST).read_bytes()
    deployment, service = seed_predictor(NAMESPACE, gcs_in_node)
    name = deployment["metadata"]["name"]
    began = time.monotonic()
    apply(node, deployment, service)
    ip = service_ip(node, name)
    url = f"http://{ip}/v1/models/torchserve:predict"
    _, text = wait_for("the seed's prediction through the Service",
                       lambda: (answer := http_inside(node, url, request))[0] == 200 and answer, 300, node)
    first_answer = time.monotonic() - began
    print(f"pod start to first answer: {first_answer:.1f} s", file=sys.stderr)
    assert json.loads(text) == {"predictions": [2]}
    assert runtime_uids(node) == {RUNTIME_UID}
    pods = json.loads(node.kubectl("get", "pods", "-n", NAMESPACE, "-l", f"app={name}", "-o", "json").stdout)
    init = pods["items"][0]["status"]["initContainerStatuses"][0]
    assert init["name"] == "storage-initializer" and init["state"]["terminated"]["exitCode"] == 0
    node.kubectl("delete", "deployment,service", name, "-n", NAMESPACE, "--wait=true", "--timeout=60s")


# --- stop ------------------------------------------------------------------------------------------------


def test_stop_leaves_nothing_behind() -> None:
    sysctls = host.read_sysctls()
    fixed_paths = host.existing_fixed_paths()
    node = _start(("pause",))
    token = node.ns.name.rsplit("-", 1)[1]
    assert leftovers(token), "a running node should be visible to leftovers()"
    node.stop()
    assert leftovers(token) == []
    assert host.read_sysctls() == sysctls
    assert host.existing_fixed_paths() == fixed_paths
