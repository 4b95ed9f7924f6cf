"""Rendering the predictor's Knative Service: image, container, autoscaling, storage, traffic."""

from __future__ import annotations

import json

import pytest
from isvc_operator.config import DEFAULTS, default_config, parse_config
from isvc_operator.render import RenderError, render_knative_service
from isvc_operator.render import revision_annotations as typed_revision_annotations
from isvc_operator.spec import default_resources, parse_inference_service


def revision_annotations(isvc: dict) -> dict[str, str]:
    return typed_revision_annotations(parse_inference_service(isvc))


def container_resources(resources: dict | None) -> dict:
    return default_resources(resources).manifest()


def pod_spec(ksvc: dict) -> dict:
    return ksvc["spec"]["template"]["spec"]


def container(ksvc: dict) -> dict:
    [main] = pod_spec(ksvc)["containers"]
    return main


def initializer(ksvc: dict) -> dict:
    [init] = pod_spec(ksvc)["initContainers"]
    return init


def test_cpu_isvc_runs_the_default_runtime_image(torchserve) -> None:
    image = container(render_knative_service(torchserve, default_config()))["image"]
    assert image == "torch-isvc/runtime:0.1.0"


def test_gpu_limit_selects_the_default_gpu_image(isvc_factory) -> None:
    isvc = isvc_factory(pytorch={"resources": {"limits": {"nvidia.com/gpu": 1}}})
    main = container(render_knative_service(isvc, default_config()))
    assert main["image"] == "torch-isvc/runtime:0.1.0-gpu"
    assert main["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_runtime_version_overrides_the_tag(isvc_factory) -> None:
    isvc = isvc_factory(pytorch={"runtimeVersion": "0.2.0"})
    assert container(render_knative_service(isvc, default_config()))["image"] == "torch-isvc/runtime:0.2.0"


def test_user_image_wins_over_config_and_runtime_version(isvc_factory) -> None:
    isvc = isvc_factory(pytorch={"image": "registry.local/custom:1", "runtimeVersion": "0.2.0"})
    assert container(render_knative_service(isvc, default_config()))["image"] == "registry.local/custom:1"


def test_configmap_image_is_used(torchserve) -> None:
    config = parse_config({
        "predictors": json.dumps({"pytorch": {"image": "mirror.example/rt", "defaultImageVersion": "9",
                                              "defaultGpuImageVersion": "9-gpu"}}),
        "storageInitializer": json.dumps({"image": "mirror.example/init:9"}),
        "ingress": "{}",
    })
    ksvc = render_knative_service(torchserve, config)
    assert container(ksvc)["image"] == "mirror.example/rt:9"
    assert initializer(ksvc)["image"] == "mirror.example/init:9"
    assert not config.problems


def test_container_starts_the_runtime_on_the_model_dir_with_user_args_appended(isvc_factory) -> None:
    isvc = isvc_factory(pytorch={"args": ["--workers", "2"]})
    assert container(render_knative_service(isvc, default_config()))["args"] == [
        "--model-store", "/mnt/models", "--model-name", "torchserve", "--http-port", "8080", "--workers", "2"]


def test_protocol_version_env_comes_first_then_user_env(isvc_factory) -> None:
    isvc = isvc_factory(pytorch={"protocolVersion": "v2", "env": [{"name": "OMP_NUM_THREADS", "value": "1"}]})
    assert container(render_knative_service(isvc, default_config()))["env"] == [
        {"name": "PROTOCOL_VERSION", "value": "v2"}, {"name": "OMP_NUM_THREADS", "value": "1"}]


def test_protocol_version_defaults_to_v1(torchserve) -> None:
    assert container(render_knative_service(torchserve, default_config()))["env"] == [
        {"name": "PROTOCOL_VERSION", "value": "v1"}]


def test_readiness_probe_targets_the_runtime_readiness_endpoint(torchserve) -> None:
    probe = container(render_knative_service(torchserve, default_config()))["readinessProbe"]
    assert probe == {"httpGet": {"path": "/v2/health/ready", "port": 8080}}


def test_a_hung_runtime_is_restarted_by_its_liveness_probe_after_a_slow_start_is_allowed(torchserve) -> None:
    main = container(render_knative_service(torchserve, default_config()))
    # /v2/health/live answers whenever the event loop does, also while models load (readiness does not)
    assert main["livenessProbe"] == {"httpGet": {"path": "/v2/health/live", "port": 8080},
                                     "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3}
    startup = main["startupProbe"]
    assert startup["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert startup["periodSeconds"] * startup["failureThreshold"] == 600  # Knative's progress deadline
    assert "livenessProbe" not in initializer(render_knative_service(torchserve, default_config()))


def test_custom_port_moves_http_port_and_probes(isvc_factory) -> None:
    isvc = isvc_factory(pytorch={"ports": [{"containerPort": 9000, "name": "http1"}]})
    main = container(render_knative_service(isvc, default_config()))
    assert main["ports"] == [{"containerPort": 9000, "name": "http1"}]
    assert main["args"][5] == "9000"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert main[probe]["httpGet"]["port"] == 9000


def insecure_defaults(pod: dict, security_context: dict) -> list[str]:
    """The fields Knative 1.15's webhook warns about for one container: warnDefaultContainerSecurityContext
    of knative.dev/serving v0.42.2 (pkg/apis/serving/k8s_validation.go), restated."""
    pod_context = pod.get("securityContext") or {}
    warnings = []
    if "runAsNonRoot" not in pod_context and "runAsNonRoot" not in security_context:
        warnings.append("runAsNonRoot")
    if "allowPrivilegeEscalation" not in security_context:
        warnings.append("allowPrivilegeEscalation")
    types = [(context.get("seccompProfile") or {}).get("type") for context in (pod_context, security_context)]
    if not any(types):
        warnings.append("seccompProfile")
    capabilities = security_context.get("capabilities")
    if capabilities is None or capabilities.get("drop") is None:
        warnings.append("capabilities")
    elif capabilities["drop"][:1] == ["all"]:
        warnings.append("capabilities.drop")
    return warnings


def test_every_container_runs_restricted_so_knative_has_nothing_to_warn_about(torchserve) -> None:
    pod = pod_spec(render_knative_service(torchserve, default_config()))
    restricted = {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                  "seccompProfile": {"type": "RuntimeDefault"}}
    for each in pod["initContainers"] + pod["containers"]:
        assert each["securityContext"] == restricted  # no runAsUser: an image's own non-root user runs
        assert insecure_defaults(pod, each["securityContext"]) == []
    assert insecure_defaults(pod, {}) == ["runAsNonRoot", "allowPrivilegeEscalation", "seccompProfile",
                                          "capabilities"]


def test_the_configmaps_security_context_replaces_the_default_in_every_container(torchserve) -> None:
    context = {"runAsNonRoot": True, "runAsUser": 1000, "readOnlyRootFilesystem": True}
    config = parse_config({key: json.dumps(value) for key, value in DEFAULTS.items()}
                          | {"securityContext": json.dumps(context)})
    pod = pod_spec(render_knative_service(torchserve, config))
    assert [each["securityContext"] for each in pod["initContainers"] + pod["containers"]] == [context] * 2


def test_resources_default_to_one_cpu_and_2gi_for_unset_keys() -> None:
    assert container_resources(None) == {
        "requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}
    assert container_resources({"limits": {"memory": "4Gi"}}) == {
        "requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "4Gi"}}


def test_resource_defaults_never_contradict_user_values() -> None:
    resources = container_resources({"limits": {"cpu": "500m"}, "requests": {"memory": "8Gi"}})
    assert resources["requests"]["cpu"] == "500m"  # not above the user's limit
    assert resources["limits"]["memory"] == "8Gi"  # not below the user's request


def test_malformed_quantity_is_a_render_error() -> None:
    with pytest.raises(RenderError, match=r"spec\.predictor\.pytorch\.resources"):
        container_resources({"limits": {"cpu": "lots"}})


def test_annotations_copied_to_the_revision_with_autoscaling_defaults(isvc_factory) -> None:
    isvc = isvc_factory()
    isvc["metadata"]["annotations"] = {
        "autoscaling.knative.dev/target": "10",
        "autoscaling.knative.dev/minScale": "7",
        "autoscaling.knative.dev/maxScale": "9",
        "kubectl.kubernetes.io/last-applied-configuration": "{...}",
    }
    assert revision_annotations(isvc) == {
        "autoscaling.knative.dev/target": "10",
        "autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev",
        "autoscaling.knative.dev/minScale": "1",
    }


def test_min_and_max_replicas_become_scale_bounds(isvc_factory) -> None:
    annotations = revision_annotations(isvc_factory(minReplicas=0, maxReplicas=5))
    assert annotations["autoscaling.knative.dev/minScale"] == "0"
    assert annotations["autoscaling.knative.dev/maxScale"] == "5"
    assert "autoscaling.knative.dev/maxScale" not in revision_annotations(isvc_factory(maxReplicas=0))


@pytest.mark.parametrize(
    "autoscaling_class", ["kpa.autoscaling.knative.dev", "hpa.autoscaling.knative.dev", "keda.sh/autoscaler"]
)
def test_user_autoscaling_class_is_kept(isvc_factory, autoscaling_class: str) -> None:
    isvc = isvc_factory()
    isvc["metadata"]["annotations"] = {"autoscaling.knative.dev/class": autoscaling_class}
    assert revision_annotations(isvc)["autoscaling.knative.dev/class"] == autoscaling_class


@pytest.mark.parametrize(
    "autoscaling_class", ["kpa.knative.dev", "hpa.knative.dev", "other.serving.knative.dev"]
)
def test_autoscaling_class_in_knatives_domain_must_be_one_of_its_own(
    isvc_factory, autoscaling_class: str
) -> None:
    isvc = isvc_factory()
    isvc["metadata"]["annotations"] = {"autoscaling.knative.dev/class": autoscaling_class}
    with pytest.raises(RenderError, match=r"metadata.annotations\[autoscaling.knative.dev/class\]"):
        revision_annotations(isvc)


def test_default_autoscaling_class_is_knatives_kpa(isvc_factory) -> None:
    annotations = revision_annotations(isvc_factory())
    assert annotations["autoscaling.knative.dev/class"] == "kpa.autoscaling.knative.dev"


def test_concurrency_timeout_and_pod_placement_reach_the_revision(isvc_factory) -> None:
    isvc = isvc_factory(containerConcurrency=4, timeout=60, serviceAccountName="sa",
                        nodeSelector={"pool": "gpu"}, tolerations=[{"key": "gpu", "operator": "Exists"}])
    spec = pod_spec(render_knative_service(isvc, default_config()))
    assert spec["containerConcurrency"] == 4 and spec["timeoutSeconds"] == 60
    assert spec["serviceAccountName"] == "sa" and spec["nodeSelector"] == {"pool": "gpu"}
    assert spec["tolerations"] == [{"key": "gpu", "operator": "Exists"}]


def test_unset_optional_fields_are_not_rendered(torchserve) -> None:
    spec = pod_spec(render_knative_service(torchserve, default_config()))
    for key in ("containerConcurrency", "timeoutSeconds", "serviceAccountName", "nodeSelector", "affinity"):
        assert key not in spec


def test_storage_initializer_downloads_into_shared_empty_dir(torchserve) -> None:
    ksvc = render_knative_service(torchserve, default_config())
    init = initializer(ksvc)
    assert init["args"] == ["gs://kfserving-examples/models/torchserve/image_classifier", "/mnt/models"]
    assert init["volumeMounts"] == [{"name": "kfserving-provision-location", "mountPath": "/mnt/models"}]
    assert init["resources"] == {"requests": {"cpu": "100m", "memory": "100Mi"},
                                 "limits": {"cpu": "1", "memory": "1Gi"}}
    assert container(ksvc)["volumeMounts"] == [
        {"name": "kfserving-provision-location", "mountPath": "/mnt/models", "readOnly": True}]
    assert pod_spec(ksvc)["volumes"] == [{"name": "kfserving-provision-location", "emptyDir": {}}]


def test_pvc_storage_mounts_claim_read_only_for_the_initializer(isvc_factory) -> None:
    ksvc = render_knative_service(isvc_factory(pytorch={"storageUri": "pvc://model-pv-claim/torchserve"}),
                                  default_config())
    init = initializer(ksvc)
    assert init["args"] == ["/mnt/pvc/torchserve", "/mnt/models"]
    assert {"name": "kfserving-pvc-source", "mountPath": "/mnt/pvc", "readOnly": True} in init["volumeMounts"]
    claim = {"claimName": "model-pv-claim", "readOnly": True}
    assert {"name": "kfserving-pvc-source", "persistentVolumeClaim": claim} in pod_spec(ksvc)["volumes"]
    # the runtime sees only the provisioned copy, never the claim
    assert [m["name"] for m in container(ksvc)["volumeMounts"]] == ["kfserving-provision-location"]


def test_pvc_without_path_reads_the_claim_root(isvc_factory) -> None:
    isvc = isvc_factory(pytorch={"storageUri": "pvc://model-pv-claim"})
    ksvc = render_knative_service(isvc, default_config())
    assert initializer(ksvc)["args"] == ["/mnt/pvc", "/mnt/models"]


def test_all_traffic_goes_to_the_latest_revision(torchserve) -> None:
    assert render_knative_service(torchserve, default_config())["spec"]["traffic"] == [
        {"latestRevision": True, "percent": 100}]


def test_user_labels_are_kept_and_ours_win(isvc_factory) -> None:
    isvc = isvc_factory()
    isvc["metadata"]["labels"] = {"team": "vision", "component": "mine"}
    ksvc = render_knative_service(isvc, default_config())
    assert ksvc["metadata"]["labels"] == {"team": "vision", "component": "predictor",
                                          "serving.kubeflow.org/inferenceservice": "torchserve"}
    assert ksvc["spec"]["template"]["metadata"]["labels"] == ksvc["metadata"]["labels"]
