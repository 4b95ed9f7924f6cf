"""The local control plane behaves like a real Kubernetes cluster where the operator needs it to.

Uses a throwaway CRD (``gadgets.localkube.test``) defined here, not the product CRD.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509

from e2e import REPO_ROOT
from e2e.localkube import BinariesMissing, Component, ControlPlane, Kubectl
from e2e.localkube.control_plane import WORKDIR_PREFIX, find_binaries
from e2e.processes import pid_alive, sweep_stale_workdirs

T = TypeVar("T")

GADGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.localkube.test
spec:
  group: localkube.test
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget, shortNames: [gdg]}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      additionalPrinterColumns:
        - {name: Color, type: string, jsonPath: .spec.color}
        - {name: Replicas, type: integer, jsonPath: .spec.replicas}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [color]
              x-kubernetes-validations:
                - rule: "!has(self.maxReplicas) || self.replicas <= self.maxReplicas"
                  message: replicas must not exceed maxReplicas
              properties:
                color: {type: string, enum: [red, green, blue]}
                replicas: {type: integer, minimum: 0, default: 1}
                maxReplicas: {type: integer, minimum: 0}
            status:
              type: object
              x-kubernetes-preserve-unknown-fields: true
"""


def gadget(name: str, namespace: str, **spec: object) -> str:
    return json.dumps(
        {"apiVersion": "localkube.test/v1", "kind": "Gadget",
         "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    )


def eventually(probe: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.25) -> T:
    """Poll `probe` until it returns something truthy; fail with the last value after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout}s (last: {last!r})")


def pinned_kubernetes_version() -> str:
    text = (REPO_ROOT / "e2e" / "cluster" / "go.mod").read_text()
    match = re.search(r"^\tk8s\.io/kubernetes (v\d+\.\d+\.\d+)\b", text, re.MULTILINE)
    assert match, "k8s.io/kubernetes is not required in e2e/cluster/go.mod"
    return match.group(1)


@pytest.fixture(scope="module")
def gadget_crd(kubectl: Kubectl) -> Iterator[str]:
    kubectl("apply", "-f", "-", input=GADGET_CRD)
    try:
        yield "gadgets.localkube.test"
    finally:
        kubectl("delete", "crd", "gadgets.localkube.test", "--wait=false", "--ignore-not-found", check=False)


def test_kubectl_version_shows_pinned_server_version(kubectl: Kubectl) -> None:
    out = json.loads(kubectl("version", "-o", "json").stdout)
    expected = pinned_kubernetes_version()
    assert out["serverVersion"]["gitVersion"] == expected
    assert out["serverVersion"]["major"] == expected[1:].split(".")[0]
    assert out["serverVersion"]["minor"] == expected.split(".")[1]


def test_crd_becomes_established_and_get_shows_printer_columns(
    kubectl: Kubectl, gadget_crd: str, namespace: str
) -> None:
    kubectl("wait", "--for=condition=Established", f"crd/{gadget_crd}", "--timeout=60s")
    kubectl("apply", "-f", "-", input=gadget("g1", namespace, color="green", replicas=3))
    table = kubectl("get", "gadgets", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "COLOR", "REPLICAS"]
    assert table[1].split()[:3] == ["g1", "green", "3"]
    # The schema default is applied by the server.
    kubectl("apply", "-f", "-", input=gadget("g2", namespace, color="red"))
    assert kubectl("get", "gdg", "g2", "-n", namespace, "-o", "jsonpath={.spec.replicas}").stdout == "1"


def test_schema_violation_is_rejected_with_field_path(
    kubectl: Kubectl, gadget_crd: str, namespace: str
) -> None:
    kubectl("wait", "--for=condition=Established", f"crd/{gadget_crd}", "--timeout=60s")
    bad_enum = kubectl("apply", "-f", "-", input=gadget("bad1", namespace, color="purple"), check=False)
    assert bad_enum.returncode != 0
    assert "spec.color" in bad_enum.stderr and "Unsupported value" in bad_enum.stderr

    bad_type = kubectl("apply", "-f", "-", input=gadget("bad2", namespace, color="red", replicas="many"),
                       check=False)
    assert bad_type.returncode != 0
    assert "spec.replicas" in bad_type.stderr

    too_many = gadget("bad3", namespace, color="red", replicas=5, maxReplicas=2)
    bad_rule = kubectl("apply", "-f", "-", input=too_many, check=False)
    assert bad_rule.returncode != 0
    assert "spec" in bad_rule.stderr and "replicas must not exceed maxReplicas" in bad_rule.stderr

    listed = kubectl("get", "gadgets", "-n", namespace, "-o", "name").stdout
    assert listed.strip() == ""


def test_owned_object_is_garbage_collected_after_owner_deletion(kubectl: Kubectl, namespace: str) -> None:
    kubectl("create", "configmap", "owner", "-n", namespace, "--from-literal=a=b")
    uid = kubectl("get", "configmap", "owner", "-n", namespace, "-o", "jsonpath={.metadata.uid}").stdout
    assert uid
    child = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": "child", "namespace": namespace,
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}],
        },
        "data": {"x": "y"},
    }
    kubectl("apply", "-f", "-", input=json.dumps(child))
    kubectl("delete", "configmap", "owner", "-n", namespace)

    def child_gone() -> bool:
        got = kubectl("get", "configmap", "child", "-n", namespace, "--ignore-not-found", "-o", "name")
        return got.stdout.strip() == ""

    eventually(child_gone, timeout=60)


def test_namespace_with_content_deletes_fully(kubectl: Kubectl, gadget_crd: str) -> None:
    name = f"doomed-{os.getpid()}-{int(time.time())}"
    kubectl("create", "namespace", name)
    kubectl("wait", "--for=condition=Established", f"crd/{gadget_crd}", "--timeout=60s")
    kubectl("create", "configmap", "c", "-n", name)
    kubectl("apply", "-f", "-", input=gadget("g", name, color="blue"))
    # The serviceaccount controller fills the namespace with its default ServiceAccount.
    eventually(lambda: kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0)
    kubectl("delete", "namespace", name, "--timeout=90s")
    gone = kubectl("get", "namespace", name, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def _get_as(server: str, ca_file: Path, token: str, path: str) -> int:
    host, port = server.removeprefix("https://").split(":")
    ctx = ssl.create_default_context(cafile=str(ca_file))
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_service_account_is_denied_until_role_binding_applied(
    cluster: ControlPlane,
    kubectl: Kubectl,
    namespace: str,
    service_account_kubeconfig: Callable[[str, str], Path],
) -> None:
    kubectl("create", "serviceaccount", "reader", "-n", namespace)
    sa_config = service_account_kubeconfig(namespace, "reader")
    token = json.loads(sa_config.read_text())["users"][0]["user"]["token"]
    path = f"/api/v1/namespaces/{namespace}/configmaps"

    assert _get_as(cluster.server, cluster.ca_file, token, path) == 403
    denied = kubectl("get", "configmaps", "-n", namespace, kubeconfig=sa_config, check=False)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr
    assert f"system:serviceaccount:{namespace}:reader" in denied.stderr

    kubectl("create", "role", "cm-reader", "-n", namespace, "--verb=get,list,watch", "--resource=configmaps")
    kubectl("create", "rolebinding", "cm-reader", "-n", namespace, "--role=cm-reader",
            f"--serviceaccount={namespace}:reader")

    eventually(lambda: _get_as(cluster.server, cluster.ca_file, token, path) == 200, timeout=30)
    kubectl("get", "configmaps", "-n", namespace, kubeconfig=sa_config)
    # The binding grants exactly what the Role says: still no secrets, nothing cluster-wide.
    assert _get_as(cluster.server, cluster.ca_file, token, f"/api/v1/namespaces/{namespace}/secrets") == 403
    assert _get_as(cluster.server, cluster.ca_file, token, "/api/v1/configmaps") == 403


def test_the_default_control_plane_is_etcd_apiserver_and_controller_manager_and_ready(
    cluster: ControlPlane,
) -> None:
    """The session's control plane (no further components): that stopping one leaves no process and no
    workdir behind is asserted where a control plane of its own is stopped, with further components
    (below) and as ``python -m e2e.localkube`` on SIGTERM."""
    assert set(cluster.pids) == {"etcd", "kube-apiserver", "kube-controller-manager"}
    assert all(pid_alive(pid) for pid in cluster.pids.values())
    status, body = cluster.request("GET", "/readyz")
    assert status == 200, body


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")[:-1]


def namespace_watcher(cp: ControlPlane) -> list[str]:
    """A further component: the real kubectl watching namespaces, as a user of its own."""
    kubeconfig = cp.client_kubeconfig("watcher", "namespace-watcher", ("system:masters",))
    return [*cp.kubectl.argv("get", "namespaces", "--watch", kubeconfig=kubeconfig)]


def test_further_flags_components_and_manifests_start_and_stop_with_the_control_plane(
    tmp_path: Path,
) -> None:
    crd = tmp_path / "gadgets.yaml"
    crd.write_text(GADGET_CRD)
    cp = ControlPlane(
        apiserver_flags={"--v": "2", "--profiling": None},
        controllers=("namespace-controller",),
        apiserver_addresses=("198.18.0.1",),
        components=(Component("namespace-watcher", namespace_watcher,
                              ready=lambda cp: "kube-system" in cp.log_tail("namespace-watcher")),),
        manifests=(crd,),
    ).start()
    pids = cp.pids
    workdir = cp.workdir
    try:
        assert list(pids) == ["etcd", "kube-apiserver", "kube-controller-manager", "namespace-watcher"]
        apiserver = cmdline(pids["kube-apiserver"])
        assert "--v=2" in apiserver and "--v=1" not in apiserver
        assert not any(arg.startswith("--profiling") for arg in apiserver)
        assert "--controllers=namespace-controller" in cmdline(pids["kube-controller-manager"])
        names = cp.kubectl("get", "crd", "-o", "name").stdout.split()
        assert "customresourcedefinition.apiextensions.k8s.io/gadgets.localkube.test" in names
        certificate = x509.load_pem_x509_certificate((workdir / "apiserver.crt").read_bytes())
        addresses = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert ipaddress.ip_address("198.18.0.1") in addresses.get_values_for_type(x509.IPAddress)
    finally:
        cp.stop()
    assert [name for name, pid in pids.items() if pid_alive(pid)] == []
    assert not workdir.exists()


def start_standalone() -> tuple[subprocess.Popen[str], Path, dict[str, int]]:
    """`python -m e2e.localkube` up and ready: (process, workdir, component pids)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "e2e.localkube"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    header = [proc.stdout.readline() for _ in range(4)]
    info = re.search(r"workdir (\S+) pids (.*)$", header[1])
    if not info:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"unexpected output: {header!r}\n{err}")
    workdir = Path(info.group(1))
    pids = {k: int(v) for k, v in (item.split("=") for item in info.group(2).split())}
    assert Path(header[3].strip()) == workdir / "admin.kubeconfig"
    assert (workdir / "admin.kubeconfig").is_file()
    assert all(pid_alive(pid) for pid in pids.values())
    return proc, workdir, pids


def test_standalone_control_plane_cleans_up_on_sigterm() -> None:
    proc, workdir, pids = start_standalone()
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [name for name, pid in pids.items() if pid_alive(pid)] == []
    assert not workdir.exists()


def test_components_die_with_a_sigkilled_owner_and_its_workdir_is_swept() -> None:
    proc, workdir, pids = start_standalone()
    proc.kill()
    proc.wait()
    eventually(lambda: not any(pid_alive(pid) for pid in pids.values()), timeout=15)
    assert workdir.exists()  # nobody could clean up after SIGKILL ...
    sweep_stale_workdirs(WORKDIR_PREFIX)  # ... so the next start (which calls this) removes it
    assert not workdir.exists()


def test_missing_binaries_tell_the_user_to_run_make_cluster(tmp_path: Path) -> None:
    with pytest.raises(BinariesMissing, match="make cluster"):
        find_binaries(tmp_path)
