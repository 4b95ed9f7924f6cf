"""Knative Serving's real admission webhook (``knative.dev/serving/cmd/webhook``) against a local apiserver.

Every Knative Service written to the cluster then passes through Knative's own defaulting and validation,
exactly as on a cluster with Knative installed. How it is wired here, where there is no kubelet:

- The apiserver calls a webhook through its Service and refuses loopback endpoints, so the webhook runs in a
  network namespace of its own (``e2e.netns``, an address in 198.18.0.0/16) and listens on Knative's port
  there; Knative's Service (selector removed) gets an EndpointSlice to that address. The apiserver needs
  ``--enable-aggregator-routing`` to resolve a webhook Service through its endpoints instead of a ClusterIP
  that nothing routes here (``APISERVER_FLAGS``).
- The webhook reaches the apiserver, which listens on 127.0.0.1, through ``e2e.knative.relay`` at the host
  end of the namespace's veth; its kubeconfig keeps the apiserver's own name for TLS (``tls-server-name``).
- It runs as Knative's ``controller`` ServiceAccount with Knative's RBAC, reads Knative's config maps, makes
  its own certificate into the ``webhook-certs`` Secret and writes the ``caBundle`` of its three webhook
  configurations itself, as in a real install (``e2e.knative.manifests`` says what is installed from where).

    with KnativeWebhook(kubeconfig, workdir) as webhook:
        ...  # every ksvc is defaulted and validated by Knative
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import yaml

from e2e import netns
from e2e.knative import manifests, sources
from e2e.knative.relay import Relay
from e2e.localkube import Kubectl, KubectlError
from e2e.processes import owned_workdir, popen, stop, sweep_stale_workdirs, tail

# For ControlPlane(apiserver_flags=...): resolve webhook Services through their endpoints.
APISERVER_FLAGS = {"--enable-aggregator-routing": "true"}
WORKDIR_PREFIX = "knative-webhook-"
SERVICE_ACCOUNT = "controller"  # Knative's webhook Deployment runs as it
PROBE_NAMESPACE = "default"
FIELD_MANAGER = "torch-isvc-e2e"


class KnativeWebhookError(RuntimeError):
    """Knative's webhook could not be started or did not become ready (the message says why)."""


def real_crds() -> list[manifests.Manifest]:
    """Knative Serving's CRDs and Istio's VirtualService CRD, read from the Go module cache."""
    serving, _ = sources.serving_dir()
    istio_api, _ = sources.istio_api_dir()
    return [*manifests.serving_crds(serving), *manifests.istio_crds(istio_api)]


def webhook_kubeconfig(admin: dict[str, Any], server: str, token: str) -> dict[str, Any]:
    """A kubeconfig for ``server`` (the relay) authenticating with ``token``: the admin kubeconfig's CA, and
    the admin's server host as the name the apiserver's certificate is checked against."""
    [cluster] = admin["clusters"]
    host = urlsplit(cluster["cluster"]["server"]).hostname or ""
    entry = {"server": server, "tls-server-name": host,
             "certificate-authority-data": cluster["cluster"]["certificate-authority-data"]}
    return {"apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "local", "cluster": entry}],
            "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": SERVICE_ACCOUNT}}],
            "current-context": "local"}


def probe_service(name: str = "knative-webhook-probe") -> manifests.Manifest:
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": name, "namespace": PROBE_NAMESPACE},
            "spec": {"template": {"spec": {"containers": [{"image": "probe.invalid/probe"}]}}}}


def apply(kubectl: Kubectl, docs: list[manifests.Manifest]) -> None:
    """Server-side apply (Istio's CRD is too large for the annotation of a client-side apply)."""
    listed = {"apiVersion": "v1", "kind": "List", "items": docs}
    kubectl("apply", "--server-side", "--force-conflicts", f"--field-manager={FIELD_MANAGER}", "-f", "-",
            input=json.dumps(listed))


def install_crds(kubectl: Kubectl) -> list[str]:
    """Apply the real CRDs and wait until the apiserver serves them; returns their names."""
    crds = real_crds()
    apply(kubectl, crds)
    names = [f"crd/{crd['metadata']['name']}" for crd in crds]
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
    return names


class KnativeWebhook:
    """Knative's webhook process in a network namespace of its own, registered with the apiserver of
    ``kubeconfig`` (admin). The apiserver must run with ``APISERVER_FLAGS``."""

    def __init__(self, kubeconfig: Path, startup_timeout: float = 90.0) -> None:
        self.admin_kubeconfig = kubeconfig
        self.startup_timeout = startup_timeout
        sweep_stale_workdirs(WORKDIR_PREFIX)
        self.workdir = owned_workdir(WORKDIR_PREFIX)
        self.log = self.workdir / "webhook.log"
        self.kubectl = Kubectl(kubeconfig, self.workdir / "kubectl-cache")
        self.version = ""
        self.namespace: netns.NetworkNamespace | None = None
        self.relay: Relay | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._configurations: list[str] = []

    # -- lifecycle --

    def start(self) -> Self:
        try:
            self._start()
        except KubectlError as failed:
            self.stop()
            raise KnativeWebhookError(f"installing Knative's webhook: {failed}") from failed
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        try:
            binary = sources.webhook_binary()
            serving, self.version = sources.serving_dir()
        except sources.SourcesMissing as missing:
            raise KnativeWebhookError(str(missing)) from missing
        install_crds(self.kubectl)
        apply(self.kubectl, manifests.webhook_prerequisites(serving))
        deployment, service = manifests.webhook_deployment(serving)
        try:
            self.namespace = netns.create("knative")
        except (netns.NetnsError, OSError) as failed:
            raise KnativeWebhookError(f"no network namespace for Knative's webhook: {failed}") from failed
        address = str(self.namespace.address.ip)
        endpoints = manifests.endpoint_slice(service, address)
        apply(self.kubectl, [manifests.selectorless_service(service), endpoints])
        self._spawn(binary, deployment)
        configurations = manifests.webhook_configurations(serving)
        apply(self.kubectl, configurations)
        self._configurations = [f"{doc['kind'].lower()}/{doc['metadata']['name']}" for doc in configurations]
        self._wait_ready()

    def _spawn(self, binary: Path, deployment: manifests.Manifest) -> None:
        assert self.namespace is not None
        admin = yaml.safe_load(self.admin_kubeconfig.read_text())
        server = urlsplit(admin["clusters"][0]["cluster"]["server"])
        apiserver = (server.hostname or "", server.port or 443)
        self.relay = Relay(str(self.namespace.host_address.ip), apiserver).start()
        token = self.kubectl("create", "token", SERVICE_ACCOUNT, "-n", manifests.SYSTEM_NAMESPACE,
                             "--duration=24h").stdout.strip()
        kubeconfig = self.workdir / "webhook.kubeconfig"
        kubeconfig.write_text(json.dumps(webhook_kubeconfig(
            admin, f"https://{self.relay.host}:{self.relay.port}", token)))
        kubeconfig.chmod(0o600)
        env = {key: value for key, value in os.environ.items() if not key.startswith("KUBERNETES_")}
        env.update(manifests.webhook_environment(deployment, f"webhook-{secrets.token_hex(3)}"))
        self.proc = popen(self.namespace.exec_argv([str(binary), f"--kubeconfig={kubeconfig}"]), log=self.log,
                          env=env, cwd=self.workdir)

    def _wait_ready(self) -> None:
        """Ready when Knative has written the caBundle of each configuration and a server-side dry-run create
        of a minimal Knative Service comes back defaulted by it."""
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            self.check_running()
            done = self.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-",
                                input=json.dumps(probe_service()), check=False, timeout=30)
            if done.returncode == 0 and self._ca_bundles_written():
                spec = json.loads(done.stdout)["spec"]["template"]["spec"]
                if "timeoutSeconds" in spec:  # set by Knative's defaulting, not by the user
                    return
                last = f"dry-run create was not defaulted: {spec}"
            else:
                last = done.stderr.strip() or "caBundle not written yet"
            time.sleep(0.5)
        raise KnativeWebhookError(f"Knative's webhook not ready after {self.startup_timeout:.0f}s ({last})\n"
                                  f"--- webhook log (tail) ---\n{tail(self.log, 30)}")

    def _ca_bundles_written(self) -> bool:
        for configuration in self._configurations:
            done = self.kubectl("get", configuration, "-o", "json", check=False)
            if done.returncode != 0:
                return False
            webhooks = json.loads(done.stdout).get("webhooks") or []
            if not webhooks or not all(base64.b64decode(w["clientConfig"].get("caBundle") or "")
                                       for w in webhooks):
                return False
        return True

    def check_running(self) -> None:
        """Raise with the log's tail if the webhook process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise KnativeWebhookError(f"Knative's webhook exited with {self.proc.returncode}\n"
                                      f"--- webhook log (tail) ---\n{tail(self.log, 30)}")

    def stop(self) -> None:
        """Unregister (so the apiserver stops calling a webhook that is gone), stop, remove the namespace."""
        if self._configurations:
            self.kubectl("delete", "--ignore-not-found", "--wait=false", *self._configurations, check=False,
                         timeout=20)
        self._configurations = []
        if self.proc is not None:
            # Knative's webhook drains for its grace period (tens of seconds) after SIGTERM; nothing
            # calls it any more once it is unregistered, so waiting for the drain only costs time.
            stop(self.proc, timeout=2.0)
        if self.relay is not None:
            self.relay.stop()
            self.relay = None
        if self.namespace is not None:
            netns.delete(self.namespace)
            self.namespace = None
        with contextlib.suppress(OSError):
            shutil.rmtree(self.workdir)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
