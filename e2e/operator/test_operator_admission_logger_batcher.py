"""`logger`, `batcher` and every object the CRD passes through to the pod are checked at admission by the
real apiserver: an invalid value is refused with its field named, and nothing is accepted to be ignored."""

from __future__ import annotations

import json

import pytest

from e2e.conftest import Kubectl
from e2e.operator.test_operator_admission import get_absent, variant

INVALID = {
    "batch_size_zero": ({"batcher": {"maxBatchSize": 0}}, "spec.predictor.batcher.maxBatchSize"),
    "batch_size_above_bound": ({"batcher": {"maxBatchSize": 1025}}, "spec.predictor.batcher.maxBatchSize"),
    "batch_size_string": ({"batcher": {"maxBatchSize": "32"}}, "spec.predictor.batcher.maxBatchSize"),
    "max_latency_negative": ({"batcher": {"maxLatency": -5}}, "spec.predictor.batcher.maxLatency"),
    "max_latency_above_a_minute": ({"batcher": {"maxLatency": 60001}}, "spec.predictor.batcher.maxLatency"),
    "batch_timeout_zero": ({"batcher": {"timeout": 0}}, "spec.predictor.batcher.timeout"),
    "batch_timeout_fraction": ({"batcher": {"timeout": 1.5}}, "spec.predictor.batcher.timeout"),
    "batcher_unknown_field": ({"batcher": {"maxBatchsize": 8}}, "maxBatchsize"),
    "logger_ftp_url": ({"logger": {"url": "ftp://sink/events"}}, "spec.predictor.logger.url"),
    "logger_url_without_scheme": ({"logger": {"url": "default-broker"}}, "spec.predictor.logger.url"),
    "logger_url_with_credentials": ({"logger": {"url": "http://user:secret@sink/"}},
                                    "spec.predictor.logger.url"),
    "logger_mode_both": ({"logger": {"mode": "both"}}, "spec.predictor.logger.mode"),
    "logger_unknown_field": ({"logger": {"url": "http://sink", "storage": {"key": "k"}}}, "storage"),
    "toleration_operator": ({"tolerations": [{"key": "k", "operator": "In"}]},
                            "spec.predictor.tolerations[0].operator"),
    "toleration_unknown_field": ({"tolerations": [{"key": "k", "effects": "NoSchedule"}]}, "effects"),
    "affinity_unknown_part": ({"affinity": {"nodeAfinity": {}}}, "nodeAfinity"),
}
INVALID_ENV = {
    "value_from_two_sources": ({"fieldRef": {"fieldPath": "metadata.name"},
                                "secretKeyRef": {"name": "s", "key": "k"}},
                               "spec.predictor.pytorch.env[].valueFrom"),
    "value_from_unknown_source": ({"vaultRef": {"path": "p"}}, "vaultRef"),
}
VALID = {
    "logger_and_batcher": {"logger": {"url": "https://sink.ns.svc:8443/events?x=1", "mode": "response"},
                           "batcher": {"maxBatchSize": 1024, "maxLatency": 1, "timeout": 3600}},
    "empty_logger_and_batcher": {"logger": {}, "batcher": {}},
    "tolerations_and_affinity": {
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "In", "values": ["b"]}]}]}}},
    },
}


def apply(kubectl: Kubectl, namespace: str, isvc: dict, *extra: str):
    return kubectl("apply", *extra, "-n", namespace, "-f", "-", input=json.dumps(isvc), check=False)


@pytest.mark.parametrize("case", sorted(VALID))
def test_valid_logger_batcher_and_pod_fields_are_admitted(
    operator_installed, kubectl: Kubectl, namespace: str, case: str
) -> None:
    proc = apply(kubectl, namespace, variant(predictor=VALID[case]), "--dry-run=server")
    assert proc.returncode == 0, proc.stderr


def test_an_env_value_from_a_field_is_admitted(operator_installed, kubectl: Kubectl, namespace: str) -> None:
    env = [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    proc = apply(kubectl, namespace, variant(pytorch={"env": env}), "--dry-run=server")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_logger_batcher_or_pod_field_is_rejected_naming_the_field(
    operator_installed, kubectl: Kubectl, namespace: str, case: str
) -> None:
    predictor, field = INVALID[case]
    isvc = variant(predictor=predictor)
    proc = apply(kubectl, namespace, isvc)
    assert proc.returncode != 0, f"{case} was admitted"
    assert field in proc.stderr, proc.stderr
    assert get_absent(kubectl, namespace, isvc["metadata"]["name"])


@pytest.mark.parametrize("case", sorted(INVALID_ENV))
def test_invalid_env_value_from_is_rejected_naming_the_field(
    operator_installed, kubectl: Kubectl, namespace: str, case: str
) -> None:
    value_from, field = INVALID_ENV[case]
    isvc = variant(pytorch={"env": [{"name": "X", "valueFrom": value_from}]})
    proc = apply(kubectl, namespace, isvc)
    assert proc.returncode != 0, f"{case} was admitted"
    assert field in proc.stderr, proc.stderr
