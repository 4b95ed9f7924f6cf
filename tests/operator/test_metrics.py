"""Monitoring from the operator's side: scrape annotations on every predictor revision (configurable, the
user's own win), and the operator's own metrics (reconciles by result, duration, isvcs by readiness)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import yaml
from isvc_operator import metrics
from isvc_operator.config import DEFAULTS, default_config, parse_config
from isvc_operator.render import render_knative_service
from operator_samples import load_sample

from e2e.processes import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "operator.yaml"
SCRAPE_KEYS = ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")


def revision(ksvc: dict[str, Any]) -> dict[str, Any]:
    return ksvc["spec"]["template"]


def config_with(**section: Any):
    data = {key: json.dumps(value) for key, value in DEFAULTS.items()}
    data["metrics"] = json.dumps({**DEFAULTS["metrics"], **section})
    return parse_config(data)


def test_every_predictor_revision_is_annotated_for_scraping_by_default(torchserve) -> None:
    annotations = revision(render_knative_service(torchserve, default_config()))["metadata"]["annotations"]
    assert {k: annotations[k] for k in SCRAPE_KEYS} == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8082",
        "prometheus.io/path": "/metrics",
    }


def test_the_metrics_sample_keeps_its_own_annotations(isvc_factory) -> None:
    isvc = isvc_factory()
    isvc["metadata"]["annotations"] = {"prometheus.io/scrape": "true", "prometheus.io/port": "9091",
                                       "team.example/owner": "ml"}  # fmt: skip
    annotations = revision(render_knative_service(isvc, default_config()))["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9091"
    assert annotations["team.example/owner"] == "ml"
    sample = load_sample("metrics")
    annotations = revision(render_knative_service(sample, default_config()))["metadata"]["annotations"]
    assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/port"]) == ("true", "8082")


def test_port_and_path_come_from_the_configmap_and_reach_the_runtime(torchserve) -> None:
    ksvc = render_knative_service(torchserve, config_with(port=9100, path="/stats"))
    annotations = revision(ksvc)["metadata"]["annotations"]
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == ("9100", "/stats")
    env = revision(ksvc)["spec"]["containers"][0]["env"]
    assert {"name": "TS_METRICS_ADDRESS", "value": "http://0.0.0.0:9100"} in env


def test_scraping_can_be_turned_off_but_user_annotations_still_pass(isvc_factory) -> None:
    isvc = isvc_factory()
    isvc["metadata"]["annotations"] = {"prometheus.io/scrape": "true"}
    annotations = revision(render_knative_service(isvc, config_with(scrape=False)))["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert "prometheus.io/port" not in annotations


def test_bad_metrics_settings_are_reported_and_defaulted() -> None:
    data = {key: json.dumps(value) for key, value in DEFAULTS.items()}
    data["metrics"] = json.dumps({"scrape": "yes", "port": 70000, "path": "metrics"})
    config = parse_config(data)
    assert config.metrics == default_config().metrics
    assert config.problems == (
        "data.metrics.scrape must be true or false; using the default True",
        "data.metrics.port must be a port number; using the default 8082",
        "data.metrics.path must be a path starting with /; using the default '/metrics'",
    )


def test_a_configmap_without_the_metrics_key_gets_the_defaults_silently() -> None:
    data = {key: json.dumps(value) for key, value in DEFAULTS.items() if key != "metrics"}
    config = parse_config(data)
    assert config.metrics == default_config().metrics and config.problems == ()


def test_isvcs_are_counted_by_their_ready_condition() -> None:
    def isvc(status: str | None) -> dict[str, Any]:
        conditions = [] if status is None else [{"type": "PredictorReady", "status": "True"},
                                                 {"type": "Ready", "status": status}]  # fmt: skip
        return {"status": {"conditions": conditions}}

    isvcs = [isvc("True"), isvc("True"), isvc("False"), isvc(None), {}]
    assert metrics.count_by_readiness(isvcs) == {"True": 2, "False": 1, "Unknown": 2}


def test_metrics_address_is_loopback_outside_a_pod_and_every_interface_inside() -> None:
    assert metrics.metrics_address({}) == ("127.0.0.1", 8081)
    assert metrics.metrics_address({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) == ("0.0.0.0", 8081)
    assert metrics.metrics_address({"ISVC_OPERATOR_METRICS_ADDRESS": "127.0.0.1:9911"}) == ("127.0.0.1", 9911)
    assert metrics.metrics_address({"ISVC_OPERATOR_METRICS_ADDRESS": "nonsense"}) == ("127.0.0.1", 8081)


def test_operator_metrics_are_served_over_http() -> None:
    port = free_port()
    metrics.observe_reconcile("changed", 0.03)
    metrics.serve(
        lambda: [{"status": {"conditions": [{"type": "Ready", "status": "True"}]}}], "127.0.0.1", port
    )
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'isvc_operator_inferenceservices{ready="True"} 1.0' in text
    # Every result is a series from the start (other tests in this process may have counted some already).
    series = {line.split(" ")[0] for line in text.splitlines() if line.startswith("isvc_operator_reconciles")}
    assert {f'isvc_operator_reconciles_total{{result="{result}"}}' for result in metrics.RESULTS} <= series
    changed = [
        line
        for line in text.splitlines()
        if line.startswith('isvc_operator_reconciles_total{result="changed"}')
    ]
    assert changed and float(changed[0].split()[-1]) >= 1
    assert "isvc_operator_reconcile_duration_seconds_bucket{le=" in text


def test_deployment_declares_and_annotates_the_metrics_port() -> None:
    [deployment] = [d for d in yaml.safe_load_all(DEPLOY.read_text()) if d and d["kind"] == "Deployment"]
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8081",
        "prometheus.io/path": "/metrics",
    }
    [container] = template["spec"]["containers"]
    assert {"name": "metrics", "containerPort": 8081} in container["ports"]
