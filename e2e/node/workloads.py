"""What the node's tests do with workloads on a running node: apply objects, wait with the node's state in the
failure message, reach a Service from inside the node's namespace (where kube-proxy serves ClusterIPs), find
the UIDs that a container's processes run as, and serve a GCS emulator inside the namespace."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from e2e import REPO_ROOT
from e2e.localkube import Kubectl
from e2e.node.components import in_namespace
from e2e.node.node import RealNode
from e2e.polling import poll

T = TypeVar("T")
VENV_BIN = Path(sys.executable).parent
GCS_PORT = 9023
EXAMPLE_BUCKET = "kfserving-examples"
EXAMPLE_PREFIX = "models/torchserve/image_classifier"
# The example's predictor requests 1 CPU; the node has 2: a second predictor beside it asks for less.
SMALL_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
BAD_STORAGE_URI = "gs://no-such-bucket/model"
EMULATOR_POLICY = "torch-isvc-test-storage-emulator"
# A small HTTP server for the node's own workloads: the storage-initializer image (python, no torch, small and
# quick to start) serving the code it holds; ECHO_PATH answers with a text that holds ECHO_MARKER.
ECHO_IMAGE = "docker.io/torch-isvc/storage-initializer:0.1.0"
ECHO_COMMAND = ["python", "-m", "http.server", "8080", "--directory", "/opt/torch-isvc"]
ECHO_PATH, ECHO_MARKER = "/isvc_runtime/__init__.py", "__version__"


def node_kubectl(node: RealNode) -> Kubectl:
    """The e2e tests' kubectl, on the node's apiserver (from the host, through the veth)."""
    return Kubectl(node.kubeconfig, node.layout.workdir / "kubectl-cache")


def apply(node: RealNode, *documents: dict[str, Any]) -> None:
    node.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in documents))


def with_bad_storage_uri(isvc: dict[str, Any]) -> dict[str, Any]:
    """``isvc`` renamed ``broken``, its model at a bucket that does not exist, with small resources."""
    isvc["metadata"]["name"] = "broken"
    isvc["spec"]["predictor"]["pytorch"].update(storageUri=BAD_STORAGE_URI, resources=SMALL_RESOURCES)
    return isvc


def wait_for(what: str, probe: Callable[[], T], timeout: float, node: RealNode, namespace: str = "default",
             interval: float = 0.25) -> T:
    """Poll ``probe`` until it returns something truthy; fail with the namespace's pods and events and the
    node's logs after ``timeout`` seconds."""
    result = poll(probe, timeout, interval)
    if result:
        return result
    pytest.fail(f"{what} not within {timeout:.0f} s\n{diagnostics(node, namespace)}")


def diagnostics(node: RealNode, namespace: str) -> str:
    """The namespace's pods and newest events, the node's conditions and taints, the components' logs."""
    pods = node.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
    events = node.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False).stdout
    query = "jsonpath={.spec.taints} {.status.conditions[*].type}={.status.conditions[*].status}"
    state = node.kubectl("get", "node", node.layout.name, "-o", query, check=False).stdout
    return f"{pods}\n{events[-3000:]}\nnode: {state}\n{node.components.logs(20)}"


def service_ip(node: RealNode, name: str, namespace: str = "default") -> str:
    return node.kubectl("get", "service", name, "-n", namespace, "-o", "jsonpath={.spec.clusterIP}").stdout


_REQUEST_SCRIPT = """\
import sys, urllib.request
data = sys.stdin.buffer.read() or None
headers = {'Content-Type': 'application/json'}
request = urllib.request.Request(sys.argv[1], data=data, headers=headers)
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(request, timeout=5) as answer:
        print(answer.status); print(answer.read().decode())
except Exception as exc:
    print(0); print(repr(exc))
"""


def http_inside(node: RealNode, url: str, body: bytes | None = None) -> tuple[int, str]:
    """A request from inside the node's namespace: (HTTP status or 0, body or the error)."""
    done = subprocess.run(in_namespace(node.ns, [sys.executable, "-c", _REQUEST_SCRIPT, url]),
                          input=body or b"", capture_output=True, timeout=30, check=False)
    status, _, text = done.stdout.decode(errors="replace").partition("\n")
    return int(status or 0), text.strip()


def node_processes(node: RealNode, marker: bytes) -> Iterator[tuple[int, str, str]]:
    """(pid, /proc/PID/cgroup, /proc/PID/status) of the processes in the node's cgroups whose command line
    holds ``marker`` (from the host's /proc: the containers' processes are the host's, in namespaces of their
    own)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            cgroup = (proc / "cgroup").read_text()
            status = (proc / "status").read_text()
        except OSError:
            continue
        if marker in cmdline and node.layout.cgroup_root in cgroup:
            yield int(proc.name), cgroup, status


def uids_of(node: RealNode, marker: bytes) -> set[int]:
    """UIDs of the node's processes whose command line holds ``marker``."""
    return {int(line.split()[1]) for _, _, status in node_processes(node, marker)
            for line in status.splitlines() if line.startswith("Uid:")}


def pod_pids(node: RealNode, pod_uid: str, marker: bytes) -> list[int]:
    """PIDs (the host's) of the processes of pod ``pod_uid`` whose command line holds ``marker``: the
    kubelet's cgroupfs driver puts a pod's containers under ``.../pod<uid>/``."""
    return [pid for pid, cgroup, _ in node_processes(node, marker) if f"/pod{pod_uid}/" in cgroup]


@contextlib.contextmanager
def gcs_emulator(node: RealNode, workdir: Path) -> Iterator[str]:
    """gcp-storage-emulator inside the node's namespace, holding the MNIST model store at the example's gs://
    URI; yields its endpoint (the node's veth address, which pods reach through their gateway)."""
    store = workdir / "store"
    build = REPO_ROOT / "examples" / "mnist" / "build_model_store.py"
    subprocess.run([sys.executable, str(build), str(store)], check=True, capture_output=True)
    endpoint = f"http://{node.ns.address.ip}:{GCS_PORT}"
    with open(workdir / "gcs.log", "wb") as log:
        emulator = subprocess.Popen(
            in_namespace(node.ns, [str(VENV_BIN / "gcp-storage-emulator"), "start", "--host",
                                   str(node.ns.address.ip), "--port", str(GCS_PORT), "-M", "-q"]),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _upload_model_store(endpoint, store, emulator)
            yield endpoint
        finally:
            os.killpg(emulator.pid, 15)
            emulator.wait(timeout=10)


def _upload_model_store(endpoint: str, store: Path, emulator: subprocess.Popen[bytes]) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    deadline = time.monotonic() + 30
    while True:
        try:
            client = storage.Client(project="examples", credentials=AnonymousCredentials(),
                                    client_options={"api_endpoint": endpoint})
            bucket = client.create_bucket(EXAMPLE_BUCKET)
            break
        except Exception:
            if time.monotonic() > deadline or emulator.poll() is not None:
                raise
            time.sleep(0.2)
    for path in sorted(p for p in store.rglob("*") if p.is_file()):
        bucket.blob(f"{EXAMPLE_PREFIX}/{path.relative_to(store).as_posix()}").upload_from_filename(path)


def emulator_policy(endpoint: str) -> list[dict[str, Any]]:
    """The MutatingAdmissionPolicy (admissionregistration.k8s.io/v1) and its binding that set
    STORAGE_EMULATOR_HOST on storage-initializer init containers of new pods."""
    env = f'Object.spec.initContainers.env{{name: "STORAGE_EMULATOR_HOST", value: {json.dumps(endpoint)}}}'
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": EMULATOR_POLICY},
        "spec": {
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                    "operations": ["CREATE"], "resources": ["pods"]}]},
            "matchConditions": [{"name": "has-storage-initializer", "expression":
                                 "has(object.spec.initContainers) && "
                                 "object.spec.initContainers.exists(c, c.name == 'storage-initializer')"}],
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "mutations": [{"patchType": "ApplyConfiguration", "applyConfiguration": {"expression": (
                "Object{spec: Object.spec{initContainers: [Object.spec.initContainers{"
                f'name: "storage-initializer", env: [{env}]}}]}}}}')}}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": EMULATOR_POLICY}, "spec": {"policyName": EMULATOR_POLICY},
    }
    return [policy, binding]
