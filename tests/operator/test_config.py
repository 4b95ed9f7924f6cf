"""The inferenceservice-config ConfigMap: documented keys, defaults, and bad input reported, not fatal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from isvc_operator.config import DEFAULTS, default_config, parse_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_defaults_are_the_documented_images() -> None:
    config = default_config()
    assert config.pytorch.image == "torch-isvc/runtime"
    assert config.pytorch.default_image_version == "0.1.0"
    assert config.pytorch.default_gpu_image_version == "0.1.0-gpu"
    assert config.storage_initializer.image == "torch-isvc/storage-initializer:0.1.0"
    assert config.ingress.mode == "istio" and config.ingress.domain == "example.com"
    assert config.problems == ()


def test_missing_configmap_falls_back_to_defaults_with_a_problem() -> None:
    config = parse_config(None)
    assert config == default_config()
    assert config.problems == ("ConfigMap inferenceservice-config not found; using the documented defaults",)


def test_malformed_json_keeps_defaults_for_that_key_only() -> None:
    config = parse_config({
        "predictors": '{"pytorch": {"image": "mirror/rt"',
        "storageInitializer": json.dumps({"image": "mirror/init:1"}),
        "ingress": "{}",
    })
    assert config.pytorch.image == "torch-isvc/runtime"
    assert config.storage_initializer.image == "mirror/init:1"
    [problem] = config.problems
    assert problem.startswith("data.predictors is not valid JSON")


def test_wrong_types_and_unknown_mode_are_reported_per_field() -> None:
    config = parse_config({
        "predictors": json.dumps({"pytorch": {"image": 5, "defaultImageVersion": "2"}}),
        "storageInitializer": json.dumps(["not", "an", "object"]),
        "ingress": json.dumps({"mode": "nginx"}),
    })
    assert config.pytorch.image == "torch-isvc/runtime"
    assert config.pytorch.default_image_version == "2"
    assert config.ingress.mode == "istio"
    assert config.problems == (
        "data.predictors.pytorch.image must be a non-empty string; using the default 'torch-isvc/runtime'",
        "data.storageInitializer must be a JSON object; using the defaults",
        "data.ingress.mode must be one of istio, none; using 'istio'",
    )


def test_missing_keys_are_reported() -> None:
    config = parse_config({})
    assert config == default_config()
    assert len(config.problems) == 3 and all("is missing" in problem for problem in config.problems)


def test_deploy_configmap_states_exactly_the_defaults() -> None:
    documents = [d for d in yaml.safe_load_all((DEPLOY / "operator.yaml").read_text()) if d]
    [configmap] = [d for d in documents if d["kind"] == "ConfigMap"]
    assert configmap["metadata"] == {"name": "inferenceservice-config", "namespace": "torch-isvc-system"}
    assert {key: json.loads(value) for key, value in configmap["data"].items()} == DEFAULTS
    assert parse_config(configmap["data"]).problems == ()


def test_security_context_defaults_to_restricted_without_a_fixed_user() -> None:
    assert default_config().security_context == {
        "runAsNonRoot": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"}}


def with_security_context(text: str) -> dict[str, str]:
    return {key: json.dumps(value) for key, value in DEFAULTS.items()} | {"securityContext": text}


def test_an_admins_security_context_replaces_the_default_as_a_whole() -> None:
    context = {"runAsUser": 1000, "runAsGroup": 1000, "seccompProfile": {"type": "Localhost",
                                                                         "localhostProfile": "p.json"}}
    config = parse_config(with_security_context(json.dumps(context)))
    assert config.security_context == context and config.problems == ()


@pytest.mark.parametrize(("context", "problem"), [
    ({"privileged": True}, "data.securityContext.privileged is not a container securityContext field"),
    ({"runAsNonRoot": "yes"}, "data.securityContext.runAsNonRoot must be true or false"),
    ({"runAsUser": -1}, "data.securityContext.runAsUser must be an integer from 0 to 2147483647"),
    ({"capabilities": {"drop": "ALL"}}, "data.securityContext.capabilities must be an object with lists"),
    ({"seccompProfile": {"type": "Localhost"}}, "data.securityContext.seccompProfile must be an object"),
    (["runAsNonRoot"], "data.securityContext must be a JSON object"),
])
def test_a_security_context_knative_would_refuse_is_reported_and_defaulted(context, problem: str) -> None:
    config = parse_config(with_security_context(json.dumps(context)))
    assert config.security_context == DEFAULTS["securityContext"]
    [reported] = config.problems
    assert reported.startswith(problem) and reported.endswith("using the defaults")


def test_a_configmap_without_the_security_context_key_gets_the_default_silently() -> None:
    data = {key: json.dumps(value) for key, value in DEFAULTS.items() if key != "securityContext"}
    config = parse_config(data)
    assert config.security_context == DEFAULTS["securityContext"] and config.problems == ()
