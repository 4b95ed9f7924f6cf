"""Fixtures for the operator's e2e tests: CRDs and install manifest applied, the operator running as a
local process with exactly its manifest's ServiceAccount, and the test-only Knative stand-in."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from e2e import REPO_ROOT, polling
from e2e.knative.standin import KnativeStandin
from e2e.localkube import ControlPlane, Kubectl
from e2e.processes import free_port, popen, stop

T = TypeVar("T")
OPERATOR_NAMESPACE = "torch-isvc-system"
OPERATOR_ACCOUNT = "torch-isvc-operator"
EXAMPLES = REPO_ROOT / "examples" / "mnist"
RUNNING: list[OperatorProcess] = []  # the session's operator, for failure messages


def wait_for(probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.1,
             what: str = "condition") -> T:
    """Poll until probe returns something truthy; fail with `what` (and the operator's log) after
    timeout seconds."""
    try:
        return polling.wait_for(probe, timeout, what, interval)
    except TimeoutError as timed_out:
        log = f"\n--- operator log (tail) ---\n{RUNNING[-1].tail()}" if RUNNING else ""
        pytest.fail(f"{timed_out}{log}")


class OperatorProcess:
    """`python -m isvc_operator` as a child process; its log is kept in a file for assertions."""

    def __init__(self, kubeconfig: Path, log_path: Path) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.port = free_port()
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig),
               "ISVC_OPERATOR_NAMESPACE": OPERATOR_NAMESPACE,
               "ISVC_LIVENESS_ENDPOINT": f"http://127.0.0.1:{self.port}/healthz",
               "ISVC_OPERATOR_LOG_LEVEL": "DEBUG",
               "ISVC_OPERATOR_METRICS_ADDRESS": f"127.0.0.1:{self.metrics_port}"}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        self.proc = popen([sys.executable, "-m", "isvc_operator"], log=self.log_path, env=env)
        wait_for(self._healthy, timeout=60, interval=0.2, what="the operator's liveness endpoint")
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"the operator exited with {self.proc.returncode}\n{self.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, 15, kill_timeout=5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


@pytest.fixture(scope="session")
def operator_installed(cluster: ControlPlane, kubectl: Kubectl) -> None:
    """`kubectl apply -f crds/ -f deploy/` plus the test-only Knative/Istio fixture CRDs."""
    kubectl.install(REPO_ROOT / "e2e" / "knative" / "crds", REPO_ROOT / "crds", REPO_ROOT / "deploy")


@pytest.fixture(scope="session")
def operator_kubeconfig(operator_installed: None, service_account_kubeconfig) -> Path:
    return service_account_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT)


@pytest.fixture(scope="session")
def operator(
    operator_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(operator_kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
    process.start()
    RUNNING.append(process)
    try:
        yield process
    finally:
        RUNNING.remove(process)
        process.stop()


@pytest.fixture(scope="session")
def knative(cluster: ControlPlane, operator_installed: None) -> Iterator[KnativeStandin]:
    standin = KnativeStandin(cluster.kubeconfig).start()
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture(autouse=True)
def no_operator_crash_during_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever a test checks, the operator must not have hit an unexpected exception meanwhile."""
    if "operator" not in request.fixturenames:
        yield
        return
    process: OperatorProcess = request.getfixturevalue("operator")
    offset = len(process.log())
    yield
    new = process.log()[offset:]
    assert "Traceback" not in new, f"the operator raised during the test:\n{new[-4000:]}"


@pytest.fixture
def apply_sample(kubectl: Kubectl, namespace: str) -> Callable[[str], dict[str, Any]]:
    def apply(sample: str) -> dict[str, Any]:
        kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / f"{sample}.yaml"))
        return yaml.safe_load((EXAMPLES / f"{sample}.yaml").read_text())

    return apply
