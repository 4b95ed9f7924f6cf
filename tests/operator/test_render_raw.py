"""Raw deployment mode renders a Deployment (the Knative Service's very pod), a Service and an HPA."""

from __future__ import annotations

from typing import Any

import pytest
from isvc_operator.config import default_config, parse_config
from isvc_operator.errors import RenderError
from isvc_operator.raw import deployment_mode, is_raw, render_raw
from isvc_operator.render import render_knative_service
from operator_samples import assert_golden, load_sample

RAW = {"serving.kubeflow.org/deploymentMode": "RawDeployment"}


def raw_sample(name: str = "torchserve", **annotations: str) -> dict[str, Any]:
    isvc = load_sample(name)
    isvc["metadata"]["annotations"] = {**(isvc["metadata"].get("annotations") or {}), **RAW, **annotations}
    return isvc


@pytest.mark.parametrize("sample", ["torchserve", "gpu", "autoscaling", "grpc"])
def test_raw_sample_renders_the_golden_deployment_service_and_hpa(sample: str) -> None:
    assert_golden(render_raw(raw_sample(sample), default_config()), f"{sample}.raw.yaml")


def test_the_deployment_runs_the_knative_services_pod() -> None:
    isvc = raw_sample()
    deployment = render_raw(isvc, default_config())["deployment"]
    ksvc = render_knative_service(isvc, default_config())
    assert deployment["metadata"]["name"] == "torchserve-predictor-default"
    assert deployment["spec"]["template"]["spec"] == ksvc["spec"]["template"]["spec"]
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "serving.kubeflow.org/inferenceservice": "torchserve", "component": "predictor"}
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == isvc["metadata"]["uid"]
    assert not any(key.startswith("autoscaling.knative.dev/")
                   for key in deployment["spec"]["template"]["metadata"]["annotations"])


def test_the_hpa_owns_the_replicas_and_defaults_to_cpu_at_80_percent() -> None:
    rendered = render_raw(raw_sample(), default_config())
    assert "replicas" not in rendered["deployment"]["spec"]
    hpa = rendered["hpa"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": "torchserve-predictor-default"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 1)
    assert hpa["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]


@pytest.mark.parametrize("prefix", ["serving.kubeflow.org", "serving.kserve.io"])
def test_kserves_autoscaling_annotations_under_either_prefix(prefix: str) -> None:
    isvc = raw_sample(**{f"{prefix}/metrics": "memory", f"{prefix}/targetUtilizationPercentage": "65"})
    isvc["spec"]["predictor"].update(minReplicas=2, maxReplicas=5)
    hpa = render_raw(isvc, default_config())["hpa"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    assert hpa["metrics"][0]["resource"] == {"name": "memory",
                                             "target": {"type": "Utilization", "averageUtilization": 65}}


@pytest.mark.parametrize("autoscaler_class", ["external", "none"])
def test_no_hpa_for_an_external_autoscaler_and_the_deployment_runs_min_replicas(
        autoscaler_class: str) -> None:
    isvc = raw_sample(**{"serving.kserve.io/autoscalerClass": autoscaler_class})
    isvc["spec"]["predictor"]["minReplicas"] = 3
    rendered = render_raw(isvc, default_config())
    assert rendered["hpa"] is None and rendered["deployment"]["spec"]["replicas"] == 3


def test_the_service_sends_port_80_to_the_runtimes_port() -> None:
    service = render_raw(raw_sample(), default_config())["service"]
    assert service["spec"]["ports"] == [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]
    assert service["spec"]["selector"] == {"serving.kubeflow.org/inferenceservice": "torchserve",
                                           "component": "predictor"}


@pytest.mark.parametrize(("annotations", "field"), [
    ({"serving.kubeflow.org/deploymentMode": "Raw"}, "serving.kubeflow.org/deploymentMode"),
    ({"serving.kserve.io/autoscalerClass": "kpa"}, "serving.kserve.io/autoscalerClass"),
    ({"serving.kubeflow.org/metrics": "rps"}, "serving.kubeflow.org/metrics"),
    ({"serving.kserve.io/targetUtilizationPercentage": "101"},
     "serving.kserve.io/targetUtilizationPercentage"),
    ({"serving.kserve.io/targetUtilizationPercentage": "x\n: y"},
     "serving.kserve.io/targetUtilizationPercentage"),
])
def test_a_bad_annotation_is_a_render_error_naming_it(annotations: dict[str, str], field: str) -> None:
    with pytest.raises(RenderError, match=f"metadata.annotations\\[{field}\\]"):
        render_raw(raw_sample(**annotations), default_config())


def test_canary_in_raw_mode_is_a_render_error_saying_it_needs_knative() -> None:
    isvc = raw_sample("canary")
    with pytest.raises(RenderError, match=r"canaryTrafficPercent.*Knative"):
        render_raw(isvc, default_config())


def test_the_mode_comes_from_either_annotation_else_the_configmap_default_which_is_serverless() -> None:
    isvc = load_sample("torchserve")
    assert deployment_mode(isvc, default_config()) == "Serverless"
    raw_default = parse_config({**_defaults(), "deploy": '{"defaultDeploymentMode": "RawDeployment"}'})
    assert is_raw(isvc, raw_default)
    isvc["metadata"]["annotations"] = {"serving.kserve.io/deploymentMode": "Serverless"}
    assert not is_raw(isvc, raw_default)
    isvc["metadata"]["annotations"] = {"serving.kserve.io/deploymentMode": "RawDeployment",
                                       "serving.kubeflow.org/deploymentMode": "Serverless"}
    assert deployment_mode(isvc, default_config()) == "Serverless"  # ours wins


def test_an_unknown_default_mode_in_the_configmap_is_a_problem_and_stays_serverless() -> None:
    config = parse_config({**_defaults(), "deploy": '{"defaultDeploymentMode": "Knative"}'})
    assert config.default_deployment_mode == "Serverless"
    assert any("data.deploy.defaultDeploymentMode" in problem for problem in config.problems)


def _defaults() -> dict[str, str]:
    import json

    from isvc_operator.config import DEFAULTS
    return {key: json.dumps(value) for key, value in DEFAULTS.items()}
