"""The product on a local cluster, installed as a user installs it: the CRD and the install manifest applied
(after Knative's real CRDs and webhook, e2e.knative.webhook), and the operator run as
``python -m isvc_operator`` with a kubeconfig of its manifest's ServiceAccount, so it has exactly that RBAC.
Shared by the e2e tests and the demo."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from e2e import REPO_ROOT
from e2e.localkube import Kubectl
from e2e.polling import wait_for
from e2e.processes import free_port, popen, stop, tail

OPERATOR_NAMESPACE = "torch-isvc-system"
OPERATOR_ACCOUNT = "torch-isvc-operator"
EXAMPLES = REPO_ROOT / "examples" / "mnist"
# The product's CRD and its manifest. Knative's and Istio's real CRDs (and Knative's admission webhook) are
# installed before them by e2e.knative.webhook.KnativeWebhook.
MANIFESTS = (REPO_ROOT / "crds", REPO_ROOT / "deploy")


def install(kubectl: Kubectl) -> None:
    """``kubectl apply`` every manifest of :data:`MANIFESTS`; returns once every CRD is Established."""
    kubectl.install(*MANIFESTS)


class OperatorProcess:
    """``python -m isvc_operator`` as a child process (its log kept in ``log_path`` for assertions), with
    kopf's liveness endpoint and the operator's metrics on free loopback ports."""

    def __init__(self, kubeconfig: Path, log_path: Path, log_level: str = "INFO") -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.log_level = log_level
        self.port = free_port()
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, timeout: float = 60.0) -> OperatorProcess:
        """Start it and wait for its liveness endpoint (``RuntimeError`` with its log if it exits first)."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("KUBERNETES_")}
        env.update(KUBECONFIG=str(self.kubeconfig), ISVC_OPERATOR_NAMESPACE=OPERATOR_NAMESPACE,
                   ISVC_LIVENESS_ENDPOINT=f"http://127.0.0.1:{self.port}/healthz",
                   ISVC_OPERATOR_LOG_LEVEL=self.log_level,
                   ISVC_OPERATOR_METRICS_ADDRESS=f"127.0.0.1:{self.metrics_port}")
        self.proc = popen([sys.executable, "-m", "isvc_operator"], log=self.log_path, env=env)
        wait_for(self._healthy, timeout, "the operator's liveness endpoint")
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the operator exited with {self.proc.returncode}\n{self.tail()}")
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
        return tail(self.log_path, lines)
