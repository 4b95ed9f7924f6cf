"""The typed InferenceService: every default decided in one place, and fields that cannot be served named."""

from __future__ import annotations

import pytest
from isvc_operator.errors import RenderError
from isvc_operator.spec import (
    ContainerPort,
    EnvVar,
    PersistentVolumeClaimSource,
    parse_inference_service,
)


def test_unset_fields_get_the_documented_defaults(torchserve) -> None:
    isvc = parse_inference_service(torchserve)
    assert (isvc.metadata.name, isvc.metadata.namespace) == ("torchserve", "kfserving-test")
    predictor = isvc.predictor
    assert (predictor.min_replicas, predictor.max_replicas) == (1, 0)
    assert predictor.container_concurrency is None and predictor.timeout_seconds is None
    assert predictor.service_account_name is None and predictor.node_selector == {}
    pytorch = predictor.pytorch
    assert pytorch.protocol_version == "v1"
    assert pytorch.port == ContainerPort(8080, "http1", "TCP")
    assert pytorch.resources.manifest() == {
        "requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}
    assert pytorch.pvc is None and not pytorch.requests_gpu


def test_fields_follow_the_crd_names(isvc_factory) -> None:
    isvc = parse_inference_service(isvc_factory(
        minReplicas=0, maxReplicas=5, containerConcurrency=4, timeout=60, canaryTrafficPercent=20,
        pytorch={"protocolVersion": "v2", "runtimeVersion": "0.2.0-gpu", "args": ["--workers", "2"],
                 "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 9000}],
                 "resources": {"limits": {"nvidia.com/gpu": 1}}}))
    predictor = isvc.predictor
    assert (predictor.min_replicas, predictor.max_replicas, predictor.container_concurrency) == (0, 5, 4)
    assert (predictor.timeout_seconds, predictor.canary_traffic_percent) == (60, 20)
    pytorch = predictor.pytorch
    assert (pytorch.protocol_version, pytorch.runtime_version) == ("v2", "0.2.0-gpu")
    assert pytorch.args == ("--workers", "2") and pytorch.env == (EnvVar("A", "1"),)
    assert pytorch.port.manifest() == {"containerPort": 9000} and pytorch.requests_gpu


@pytest.mark.parametrize(("uri", "source"), [
    ("pvc://claim/some/path/", PersistentVolumeClaimSource("claim", "some/path")),
    ("pvc://claim", PersistentVolumeClaimSource("claim", "")),
    ("s3://bucket/model", None),
])
def test_a_pvc_storage_uri_names_its_claim_and_path(isvc_factory, uri: str, source) -> None:
    assert parse_inference_service(isvc_factory(pytorch={"storageUri": uri})).predictor.pytorch.pvc == source


@pytest.mark.parametrize(("pytorch", "field"), [
    ({"storageUri": None}, r"spec\.predictor\.pytorch\.storageUri is required"),
    ({"storageUri": "pvc:///path"}, r"spec\.predictor\.pytorch\.storageUri: pvc:// needs a claim"),
    ({"resources": {"limits": {"cpu": "lots"}}}, r"spec\.predictor\.pytorch\.resources"),
    ({"protocolVersion": "v3"}, r"spec\.predictor\.pytorch\.protocolVersion"),
])
def test_a_field_that_cannot_be_served_is_named(isvc_factory, pytorch: dict, field: str) -> None:
    with pytest.raises(RenderError, match=field):
        parse_inference_service(isvc_factory(pytorch=pytorch))


def test_a_predictor_without_pytorch_is_refused(torchserve) -> None:
    del torchserve["spec"]["predictor"]["pytorch"]
    with pytest.raises(RenderError, match=r"spec\.predictor\.pytorch is required"):
        parse_inference_service(torchserve)
