"""The operator's ServiceAccount holds exactly what it uses, checked by the apiserver's own authorizer."""

from __future__ import annotations

import pytest

from e2e.installation import OPERATOR_ACCOUNT, OPERATOR_NAMESPACE
from e2e.localkube import Kubectl

AS = f"--as=system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"
OWN = f"--namespace={OPERATOR_NAMESPACE}"
ISVC = "inferenceservices.serving.kubeflow.org"
KSVC = "services.serving.knative.dev"
VS = "virtualservices.networking.istio.io"
LEASE = "torch-isvc-operator"

ALLOWED = [
    ("watch", ISVC, "-A"),
    ("patch", ISVC, "-A", "--subresource=status"),
    ("create", KSVC, "-A"),
    ("patch", KSVC, "-A"),
    ("watch", KSVC, "-A"),
    ("create", "events", "-A"),
    ("watch", "configmaps/inferenceservice-config", OWN),
    ("get", "configmaps/inferenceservice-config", OWN),
    ("create", VS, "-A"),
    ("patch", VS, "-A"),
    ("delete", VS, "-A"),
    ("watch", VS, "-A"),
    ("watch", "serviceaccounts", "-A"),
    ("get", "serviceaccounts", "-A"),
    ("get", "secrets", "-A"),  # by name, for key names and annotations: see deploy/operator.yaml
    ("delete", KSVC, "-A"),  # an isvc switched to RawDeployment mode
    *((verb, resource, "-A") for verb in ("watch", "create", "patch", "delete")
      for resource in ("deployments.apps", "services", "horizontalpodautoscalers.autoscaling")),
    ("get", "pods", "-A"),
    ("watch", "pods", "-A"),
    ("get", f"leases.coordination.k8s.io/{LEASE}", OWN),  # leader election among its replicas
    ("update", f"leases.coordination.k8s.io/{LEASE}", OWN),
    ("create", "leases.coordination.k8s.io", OWN),
]
DENIED = [
    ("list", "secrets", "-A"),
    ("watch", "secrets", "-A"),
    ("create", "secrets", "-A"),
    ("update", "secrets", "-A"),
    ("patch", "secrets", "-A"),
    ("delete", "secrets", "-A"),
    ("create", "serviceaccounts", "-A"),
    ("patch", "serviceaccounts", "-A"),
    ("create", "serviceaccounts/token", "-A"),
    ("patch", ISVC, "-A"),
    ("update", ISVC, "-A"),
    ("delete", ISVC, "-A"),
    ("update", KSVC, "-A"),
    ("update", "deployments.apps", "-A"),
    ("patch", "deployments.apps", "-A", "--subresource=scale"),
    ("patch", "pods", "-A"),
    ("delete", "pods", "-A"),
    ("patch", "pods", "-A", "--subresource=status"),
    ("get", "configmaps", "-A"),
    ("get", "configmaps/other-config", OWN),
    ("create", "pods", "-A"),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io", "-A"),
    ("update", "leases.coordination.k8s.io/kube-scheduler", OWN),
    ("delete", f"leases.coordination.k8s.io/{LEASE}", OWN),
    ("create", "leases.coordination.k8s.io", "-A"),
    ("update", f"leases.coordination.k8s.io/{LEASE}", "--namespace=kube-system"),
]


def can(kubectl: Kubectl, check: tuple[str, ...]) -> str:
    verb, resource, *flags = check
    return kubectl("auth", "can-i", verb, resource, AS, *flags, check=False).stdout.strip()


@pytest.mark.parametrize("check", ALLOWED, ids=" ".join)
def test_operator_may_do_what_it_needs(operator_installed, kubectl: Kubectl, check: tuple[str, ...]) -> None:
    assert can(kubectl, check) == "yes"


@pytest.mark.parametrize("check", DENIED, ids=" ".join)
def test_operator_may_not_do_anything_else(
    operator_installed, kubectl: Kubectl, check: tuple[str, ...]
) -> None:
    assert can(kubectl, check) == "no"
