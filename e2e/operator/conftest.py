"""Fixtures for the operator's e2e tests: CRDs and install manifest applied, the operator running as a
local process with exactly its manifest's ServiceAccount, and the test-only Knative stand-in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from e2e import polling
from e2e.installation import EXAMPLES, OPERATOR_ACCOUNT, OPERATOR_NAMESPACE, OperatorProcess, install
from e2e.knative.webhook import KnativeWebhook
from e2e.localkube import ControlPlane, Kubectl
from e2e.standin.knative import KnativeStandin

T = TypeVar("T")
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


@pytest.fixture(scope="session")
def operator_installed(cluster: ControlPlane, kubectl: Kubectl, knative_webhook: KnativeWebhook) -> None:
    """`kubectl apply -f crds/ -f deploy/` on a cluster with Knative's real CRDs and admission webhook (and
    Istio's VirtualService CRD), which ``knative_webhook`` installs first."""
    install(kubectl)


@pytest.fixture(scope="session")
def operator_kubeconfig(operator_installed: None, service_account_kubeconfig) -> Path:
    return service_account_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT)


@pytest.fixture(scope="session")
def operator(
    operator_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    # DEBUG: the operator also logs its no-op reconciles, which the tests look for.
    process = OperatorProcess(operator_kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log",
                              log_level="DEBUG")
    try:
        process.start()
    except (RuntimeError, TimeoutError) as exc:
        process.stop()
        pytest.fail(f"the operator did not start: {exc}\n{process.tail()}")
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
