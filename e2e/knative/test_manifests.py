"""What installs Knative's webhook and the real CRDs comes from Knative's and Istio's own files in the Go
module cache; only the Service's selector, the EndpointSlice and two feature flags are ours."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from e2e.knative import manifests, sources


def module_dir(find: Callable[[], tuple[Path, str]]) -> Path:
    """A pinned module's directory in the Go module cache; the test fails (never skips) when it is missing."""
    try:
        return find()[0]
    except sources.SourcesMissing as missing:
        pytest.fail(str(missing), pytrace=False)


@pytest.fixture(scope="module")
def serving() -> Path:
    return module_dir(sources.serving_dir)


@pytest.fixture(scope="module")
def istio_api() -> Path:
    return module_dir(sources.istio_api_dir)


def test_pinned_versions_are_knative_serving_v0_42_2_and_istio_api_v1_32_0() -> None:
    assert sources.serving_dir()[1] == "v0.42.2"
    assert sources.istio_api_dir()[1] == "v1.32.0"


def test_knative_crds_are_the_real_schemas_not_preserve_unknown_fields(serving: Path) -> None:
    crds = {crd["metadata"]["name"]: crd for crd in manifests.serving_crds(serving)}
    assert "services.serving.knative.dev" in crds and "revisions.serving.knative.dev" in crds
    [v1] = [v for v in crds["services.serving.knative.dev"]["spec"]["versions"] if v["name"] == "v1"]
    schema = v1["schema"]["openAPIV3Schema"]
    assert not schema.get("x-kubernetes-preserve-unknown-fields")
    assert "template" in schema["properties"]["spec"]["properties"]


def test_istio_virtualservice_crd_serves_the_v1beta1_the_operator_writes(istio_api: Path) -> None:
    [crd] = manifests.istio_crds(istio_api)
    assert crd["metadata"]["name"] == "virtualservices.networking.istio.io"
    assert "v1beta1" in {version["name"] for version in crd["spec"]["versions"] if version["served"]}


def test_unknown_istio_kind_is_an_error(istio_api: Path) -> None:
    with pytest.raises(LookupError, match="NoSuchKind"):
        manifests.istio_crds(istio_api, ["VirtualService", "NoSuchKind"])


def test_config_features_enables_init_containers_and_emptydir_keeping_the_example(serving: Path) -> None:
    [features] = [doc for doc in manifests.webhook_prerequisites(serving)
                  if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "config-features"]
    assert features["data"]["kubernetes.podspec-init-containers"] == "enabled"
    assert features["data"]["kubernetes.podspec-volumes-emptydir"] == "enabled"
    assert "_example" in features["data"]


def test_prerequisites_come_before_use_namespace_first_secret_last(serving: Path) -> None:
    docs = manifests.webhook_prerequisites(serving)
    assert (docs[0]["kind"], docs[0]["metadata"]["name"]) == ("Namespace", manifests.SYSTEM_NAMESPACE)
    assert (docs[-1]["kind"], docs[-1]["metadata"]["name"]) == ("Secret", "webhook-certs")
    accounts = {doc["metadata"]["name"] for doc in docs if doc["kind"] == "ServiceAccount"}
    assert "controller" in accounts


def test_webhook_service_loses_only_its_selector_and_its_slice_points_at_the_address(serving: Path) -> None:
    _, service = manifests.webhook_deployment(serving)
    selectorless = manifests.selectorless_service(service)
    assert "selector" in service["spec"] and "selector" not in selectorless["spec"]
    assert selectorless["spec"]["ports"] == service["spec"]["ports"]
    slice_ = manifests.endpoint_slice(service, "198.18.0.2")
    assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == "webhook"
    assert slice_["endpoints"] == [{"addresses": ["198.18.0.2"], "conditions": {"ready": True}}]
    assert slice_["ports"] == [{"name": "https-webhook", "port": 8443, "protocol": "TCP"}]


def test_webhook_environment_is_the_deployments_with_downward_fields_filled(serving: Path) -> None:
    deployment, _ = manifests.webhook_deployment(serving)
    env = manifests.webhook_environment(deployment, "webhook-abc")
    assert env["SYSTEM_NAMESPACE"] == "knative-serving" and env["POD_NAME"] == "webhook-abc"
    assert env["WEBHOOK_PORT"] == "8443" and env["WEBHOOK_NAME"] == "webhook"


def test_webhook_configurations_are_knatives_three(serving: Path) -> None:
    names = {(doc["kind"], doc["metadata"]["name"]) for doc in manifests.webhook_configurations(serving)}
    assert names == {("MutatingWebhookConfiguration", "webhook.serving.knative.dev"),
                     ("ValidatingWebhookConfiguration", "validation.webhook.serving.knative.dev"),
                     ("ValidatingWebhookConfiguration", "config.webhook.serving.knative.dev")}


def test_a_missing_webhook_binary_is_an_error_naming_make_cluster(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_ISVC_CACHE", str(tmp_path))
    with pytest.raises(sources.SourcesMissing, match="make cluster"):
        sources.webhook_binary()
