"""Invalid InferenceServices are rejected at admission (schema + CEL), with the offending field named."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from e2e.localkube import Kubectl

VALID: dict[str, Any] = {
    "apiVersion": "serving.kubeflow.org/v1beta1",
    "kind": "InferenceService",
    "metadata": {"name": "torchserve"},
    "spec": {"predictor": {"pytorch": {"storageUri": "gs://kfserving-examples/models/torchserve/image_classifier"}}},
}


def variant(name: str | None = None, predictor: dict[str, Any] | None = None,
            pytorch: dict[str, Any] | None = None, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    isvc = copy.deepcopy(VALID)
    if name is not None:
        isvc["metadata"]["name"] = name
    isvc["spec"]["predictor"].update(predictor or {})
    isvc["spec"]["predictor"]["pytorch"].update(pytorch or {})
    for key in drop:
        del isvc["spec"]["predictor"]["pytorch"][key]
    return isvc


GPU = {"limits": {"nvidia.com/gpu": 1}}
INVALID = {
    "storage_uri_scheme_ftp": (variant(pytorch={"storageUri": "ftp://host/model"}),
                               "spec.predictor.pytorch.storageUri"),
    "storage_uri_relative_path": (variant(pytorch={"storageUri": "models/mnist"}),
                                  "spec.predictor.pytorch.storageUri"),
    "storage_uri_pvc_without_claim": (variant(pytorch={"storageUri": "pvc:///path"}),
                                      "spec.predictor.pytorch.storageUri"),
    "storage_uri_missing": (variant(drop=("storageUri",)), "spec.predictor.pytorch.storageUri"),
    "min_above_max_replicas": (variant(predictor={"minReplicas": 3, "maxReplicas": 2}),
                               "spec.predictor.minReplicas"),
    "negative_min_replicas": (variant(predictor={"minReplicas": -1}), "spec.predictor.minReplicas"),
    "negative_max_replicas": (variant(predictor={"maxReplicas": -2}), "spec.predictor.maxReplicas"),
    "negative_concurrency": (variant(predictor={"containerConcurrency": -1}),
                             "spec.predictor.containerConcurrency"),
    "canary_above_100": (variant(predictor={"canaryTrafficPercent": 101}),
                         "spec.predictor.canaryTrafficPercent"),
    "zero_timeout": (variant(predictor={"timeout": 0}), "spec.predictor.timeout"),
    "protocol_v3": (variant(pytorch={"protocolVersion": "v3"}), "spec.predictor.pytorch.protocolVersion"),
    "name_starting_with_digit": (variant(name="9torchserve"), "metadata.name"),
    "name_with_dot": (variant(name="torch.serve"), "metadata.name"),
    "name_too_long_for_derived_names": (variant(name="t" * 46), "metadata.name"),
    "gpu_limit_on_cpu_runtime_version": (variant(pytorch={"runtimeVersion": "0.1.0", "resources": GPU}),
                                         "spec.predictor.pytorch.runtimeVersion"),
    "gpu_runtime_version_without_gpu": (variant(pytorch={"runtimeVersion": "0.1.0-gpu"}),
                                        "spec.predictor.pytorch.runtimeVersion"),
    "two_frameworks": (variant(predictor={"tensorflow": {"storageUri": "gs://b/m"}}),
                       "spec.predictor must set exactly one predictor framework"),
    "malformed_cpu_quantity": (variant(pytorch={"resources": {"limits": {"cpu": "lots"}}}),
                               "spec.predictor.pytorch.resources.limits.cpu"),
    "two_ports": (variant(pytorch={"ports": [{"containerPort": 8080}, {"containerPort": 8081}]}),
                  "spec.predictor.pytorch.ports"),
    "unknown_field_typo": (variant(pytorch={"storageURI": "gs://b/m"}), "storageURI"),
    "grpc_port_named_http1": (variant(pytorch={"protocolVersion": "grpc-v2", "ports": [
        {"containerPort": 9000, "name": "http1"}]}), "spec.predictor.pytorch.ports[0].name"),
    "h2c_port_for_http_protocol": (variant(pytorch={"protocolVersion": "v2", "ports": [
        {"containerPort": 9000, "name": "h2c"}]}), "spec.predictor.pytorch.ports[0].name"),
    "grpc_on_the_http_port": (variant(pytorch={"protocolVersion": "grpc-v2", "ports": [
        {"containerPort": 8080}]}), "spec.predictor.pytorch.ports[0].containerPort"),
}


def test_the_valid_base_spec_is_accepted(operator_installed, kubectl: Kubectl, namespace: str) -> None:
    kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(VALID))


@pytest.mark.parametrize("pytorch", [
    {"protocolVersion": "grpc-v2"},
    {"protocolVersion": "grpc-v2", "ports": [{"containerPort": 9000}]},
    {"protocolVersion": "grpc-v2", "ports": [{"containerPort": 9000, "name": "h2c", "protocol": "TCP"}]},
    {"protocolVersion": "v2", "ports": [{"containerPort": 9000, "name": "http1"}]},
], ids=["grpc_default_port", "grpc_unnamed_port", "grpc_h2c_port", "v2_http1_port"])
def test_each_protocol_with_its_port_is_accepted(operator_installed, kubectl: Kubectl, namespace: str,
                                                 pytorch: dict[str, Any]) -> None:
    isvc = variant(pytorch=pytorch)
    kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(isvc))


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_spec_is_rejected_at_admission_naming_the_field(
    operator_installed, kubectl: Kubectl, namespace: str, case: str
) -> None:
    isvc, field = INVALID[case]
    proc = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(isvc), check=False)
    assert proc.returncode != 0, f"{case} was admitted"
    assert field in proc.stderr, proc.stderr
    assert get_absent(kubectl, namespace, isvc["metadata"]["name"])


def get_absent(kubectl: Kubectl, namespace: str, name: str) -> bool:
    return kubectl("get", "isvc", name, "-n", namespace, check=False).returncode != 0
