"""Knative Serving's own admission webhook and CRDs judge the Knative Services the operator renders.

Every ksvc written to the e2e cluster passes through Knative's real defaulting and validation (v0.42.2, built
from the Go module proxy) and the real CRD schemas; here they judge the golden files, every sample in
``examples/`` as ``render_knative_service`` renders it, and the autoscaling class bug of issue 20.
"""

from __future__ import annotations

import copy
import json
import subprocess
from typing import Any

import pytest
import yaml
from isvc_operator.config import default_config
from isvc_operator.render import render_knative_service

from e2e import REPO_ROOT
from e2e.knative.webhook import KnativeWebhook
from e2e.localkube import Kubectl

GOLDEN = REPO_ROOT / "tests" / "operator" / "golden"
CLASS = "autoscaling.knative.dev/class"


def inference_services() -> dict[str, dict[str, Any]]:
    """Every InferenceService in examples/, by file."""
    found = {}
    for path in sorted((REPO_ROOT / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "InferenceService":
                found[f"{path.relative_to(REPO_ROOT)}:{doc['metadata']['name']}"] = doc
    return found


def knative_services() -> dict[str, dict[str, Any]]:
    """The golden ksvcs, and each example rendered by the operator (as it would for a fresh isvc)."""
    ksvcs = {str(path.relative_to(REPO_ROOT)): yaml.safe_load(path.read_text())
             for path in sorted(GOLDEN.glob("*.ksvc.yaml"))}
    for name, isvc in inference_services().items():
        isvc = copy.deepcopy(isvc)
        isvc["metadata"].update({"namespace": "examples", "uid": "6f0c1d2e-0000-4000-8000-000000000001",
                                 "generation": 1})
        ksvcs[f"{name} rendered"] = render_knative_service(isvc, default_config())
    return ksvcs


KSVCS = knative_services()


def dry_run_create(kubectl: Kubectl, namespace: str, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    return kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(obj), check=False)


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Warning:")]


SAMPLES = ("torchserve", "gpu", "autoscaling", "metrics", "canary", "logger", "grpc")


def test_every_sample_and_golden_file_is_checked() -> None:
    samples = {name.split(":")[0] for name in inference_services()}
    assert {f"examples/mnist/{sample}.yaml" for sample in SAMPLES} <= samples
    assert {source for source in KSVCS if source.startswith("tests/")} == {
        f"tests/operator/golden/{sample}.ksvc.yaml" for sample in SAMPLES}


@pytest.mark.parametrize("source", sorted(KSVCS))
def test_knative_accepts_the_ksvc_without_warnings(knative_webhook: KnativeWebhook, kubectl: Kubectl,
                                                   namespace: str, source: str) -> None:
    ksvc = KSVCS[source]
    done = dry_run_create(kubectl, namespace, ksvc)
    assert done.returncode == 0, f"Knative refused {source}: {done.stderr}"
    defaulted = json.loads(done.stdout)["spec"]["template"]["spec"]
    assert defaulted["timeoutSeconds"] == 300  # Knative's defaulting ran on it
    assert warnings(done.stderr) == [], f"Knative warned about {source}"


def test_wrong_autoscaling_class_is_refused_by_knative(knative_webhook: KnativeWebhook, kubectl: Kubectl,
                                                      namespace: str) -> None:
    ksvc = copy.deepcopy(KSVCS["tests/operator/golden/torchserve.ksvc.yaml"])
    ksvc["spec"]["template"]["metadata"]["annotations"][CLASS] = "kpa.knative.dev"  # the bug of issue 20
    done = dry_run_create(kubectl, namespace, ksvc)
    assert done.returncode != 0
    assert "invalid value: kpa.knative.dev" in done.stderr
    assert f"spec.template.metadata.annotations.{CLASS}" in done.stderr
    assert "validation.webhook.serving.knative.dev" in done.stderr


@pytest.mark.parametrize("knative_class", ["kpa.autoscaling.knative.dev", "hpa.autoscaling.knative.dev"])
def test_knatives_own_classes_are_accepted(knative_webhook: KnativeWebhook, kubectl: Kubectl, namespace: str,
                                          knative_class: str) -> None:
    ksvc = copy.deepcopy(KSVCS["tests/operator/golden/torchserve.ksvc.yaml"])
    annotations = ksvc["spec"]["template"]["metadata"]["annotations"]
    annotations[CLASS] = knative_class
    if knative_class.startswith("hpa"):
        annotations["autoscaling.knative.dev/metric"] = "cpu"
    done = dry_run_create(kubectl, namespace, ksvc)
    assert done.returncode == 0, done.stderr


def test_knative_defaults_what_the_operator_leaves_unset(knative_webhook: KnativeWebhook, kubectl: Kubectl,
                                                        namespace: str) -> None:
    done = dry_run_create(kubectl, namespace, KSVCS["tests/operator/golden/torchserve.ksvc.yaml"])
    ksvc = json.loads(done.stdout)
    spec = ksvc["spec"]["template"]["spec"]
    defaulted = (spec["containerConcurrency"], spec["timeoutSeconds"], spec["enableServiceLinks"])
    assert defaulted == (0, 300, False)
    assert spec["containers"][0]["readinessProbe"]["successThreshold"] == 1
    assert "serving.knative.dev/creator" in ksvc["metadata"]["annotations"]


def test_the_real_ksvc_schema_refuses_a_field_the_standin_crd_kept(knative_webhook: KnativeWebhook,
                                                                   kubectl: Kubectl, namespace: str) -> None:
    ksvc = copy.deepcopy(KSVCS["tests/operator/golden/torchserve.ksvc.yaml"])
    ksvc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"port": 8080}
    done = dry_run_create(kubectl, namespace, ksvc)
    assert done.returncode != 0
    assert 'unknown field "spec.template.spec.containers[0].readinessProbe.httpGett"' in done.stderr


def test_the_real_virtualservice_schema_refuses_a_wrong_type(knative_webhook: KnativeWebhook,
                                                            kubectl: Kubectl, namespace: str) -> None:
    virtualservice = {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
                      "metadata": {"name": "wrong"}, "spec": {"hosts": "not-a-list"}}
    done = dry_run_create(kubectl, namespace, virtualservice)
    assert done.returncode != 0
    assert "spec.hosts" in done.stderr and "array" in done.stderr
