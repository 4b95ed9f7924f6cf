"""The runtime's metrics exporter in-process: labels, bounded cardinality, TorchServe's series, addresses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from isvc_runtime.config import ModelSettings
from isvc_runtime.metrics import (
    RuntimeMetrics,
    identity_from_env,
    metrics_address,
    protocol_of,
    serve,
)
from isvc_runtime.registry import ModelRegistry
from isvc_runtime.runner import ModelRunner
from monitoring_support import free_port
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture()
def metrics() -> RuntimeMetrics:
    registry = ModelRegistry()
    registry.add(ModelRunner("mnist", ModelSettings(), version="1.0"))
    registry.add_alias("torchserve", registry.runners[0])
    return RuntimeMetrics(registry, isvc="torchserve", revision="rev-2", hostname="pod-a")


def samples(metrics: RuntimeMetrics, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
        if s.name == name
    ]


def test_requests_are_counted_by_model_protocol_endpoint_and_code_with_revision(
    metrics: RuntimeMetrics,
) -> None:
    for _ in range(3):
        metrics.request_finished(endpoint="v1_predict", model="mnist", status=200, seconds=0.004)
    metrics.request_finished(endpoint="v2_infer", model="torchserve", status=400, seconds=0.001)
    counted = {
        (labels["model"], labels["protocol"], labels["endpoint"], labels["code"]): value
        for labels, value in samples(metrics, "isvc_requests_total")
    }
    assert counted == {("mnist", "v1", "v1_predict", "200"): 3.0, ("mnist", "v2", "v2_infer", "400"): 1.0}
    assert {(lb["isvc"], lb["revision"]) for lb, _ in samples(metrics, "isvc_requests_total")} == {
        ("torchserve", "rev-2")
    }


def test_unknown_model_names_share_one_empty_label(metrics: RuntimeMetrics) -> None:
    for i in range(50):
        metrics.request_finished(endpoint="v1_predict", model=f"guess-{i}", status=404, seconds=0.0001)
    [(labels, value)] = samples(metrics, "isvc_requests_total")
    assert (labels["model"], value) == ("", 50.0)
    assert len(metrics._request_children) == 1


def test_latency_buckets_resolve_milliseconds(metrics: RuntimeMetrics) -> None:
    metrics.request_finished(endpoint="predictions", model="mnist", status=200, seconds=0.0008)
    metrics.request_finished(endpoint="predictions", model="mnist", status=200, seconds=0.003)
    buckets = {
        labels["le"]: value
        for labels, value in samples(metrics, "isvc_request_duration_seconds_bucket")
        if labels["endpoint"] == "predictions"
    }
    assert (buckets["0.0005"], buckets["0.001"], buckets["0.0025"], buckets["0.005"]) == (0, 1, 1, 2)


def test_batches_feed_batch_size_queue_and_inference_histograms(metrics: RuntimeMetrics) -> None:
    metrics.batch_finished(
        model="mnist",
        rows=6,
        requests=3,
        queue_seconds=[0.001, 0.002, 0.003],
        inference_seconds=0.02,
        ok=False,
    )
    assert [v for _, v in samples(metrics, "isvc_batch_size_sum")] == [6.0]
    assert [v for _, v in samples(metrics, "isvc_queue_duration_seconds_count")] == [3.0]
    assert [v for _, v in samples(metrics, "isvc_inference_duration_seconds_sum")] == [0.02]
    assert [v for _, v in samples(metrics, "isvc_batch_failures_total")] == [1.0]


def test_explanations_have_their_own_histogram(metrics: RuntimeMetrics) -> None:
    metrics.request_finished(endpoint="v1_explain", model="mnist", status=200, seconds=0.7)
    metrics.request_finished(endpoint="v1_predict", model="mnist", status=200, seconds=0.002)
    assert [v for _, v in samples(metrics, "isvc_explain_duration_seconds_count")] == [1.0]


def test_model_readiness_and_load_time(metrics: RuntimeMetrics) -> None:
    assert [v for _, v in samples(metrics, "isvc_model_ready")] == [0.0]
    metrics.model_loaded(model="mnist", seconds=1.5, ok=True)
    assert [v for _, v in samples(metrics, "isvc_model_ready")] == [1.0]
    assert [v for _, v in samples(metrics, "isvc_model_load_seconds")] == [1.5]


def test_torchserve_series_are_written_with_torchserve_names_and_microseconds(
    metrics: RuntimeMetrics,
) -> None:
    metrics.request_finished(endpoint="v1_predict", model="mnist", status=200, seconds=0.25)
    metrics.request_finished(endpoint="health", model=None, status=200, seconds=0.0001)
    metrics.request_finished(endpoint="v1_predict", model="mnist", status=503, seconds=0.001)
    metrics.batch_finished(
        model="mnist", rows=1, requests=1, queue_seconds=[0.5], inference_seconds=0.1, ok=True
    )
    text = metrics.exposition().decode()
    host = 'model_name="mnist",model_version="default",hostname="pod-a"'  # TorchServe's order
    assert "# TYPE ts_inference_latency_microseconds counter\n" in text
    assert (
        "# HELP ts_queue_latency_microseconds Torchserve prometheus counter metric with unit: Microseconds"
        in text
    )
    lines = set(text.splitlines())
    assert f"ts_inference_requests_total{{{host}}} 2.0" in lines
    [latency] = [line for line in lines if line.startswith("ts_inference_latency_microseconds{")]
    assert float(latency.split()[-1]) == pytest.approx(251000.0)
    [queue] = [line for line in lines if line.startswith("ts_queue_latency_microseconds{")]
    assert float(queue.split()[-1]) == pytest.approx(500000.0)
    assert 'Requests2XX{Level="Host",Hostname="pod-a"} 2.0' in lines  # the health probe is an API request
    assert 'Requests5XX{Level="Host",Hostname="pod-a"} 1.0' in lines


def test_protocols_of_endpoint_labels() -> None:
    assert [protocol_of(e) for e in ("v1_predict", "v2_infer", "predictions", "health")] == [
        "v1",
        "v2",
        "torchserve",
        "other",
    ]


def test_identity_comes_from_the_operator_and_knative_environment() -> None:
    assert identity_from_env({"ISVC_NAME": "a", "K_REVISION": "a-predictor-default-00003"}) == (
        "a",
        "a-predictor-default-00003",
    )
    assert identity_from_env({"K_SERVICE": "b-predictor-default", "K_REVISION": "r"}) == ("b", "r")
    assert identity_from_env({}) == ("", "")


def test_metrics_address_prefers_the_flag_then_torchserve_env_then_8082() -> None:
    env = {"TS_METRICS_ADDRESS": "http://127.0.0.1:9100"}
    assert metrics_address(9200, "0.0.0.0", env) == ("0.0.0.0", 9200)
    assert metrics_address(None, "0.0.0.0", env) == ("127.0.0.1", 9100)
    assert metrics_address(None, "0.0.0.0", {}) == ("0.0.0.0", 8082)
    assert metrics_address(None, "0.0.0.0", {"TS_METRICS_ADDRESS": "http://host"}) == ("0.0.0.0", 8082)


def test_metrics_port_serves_the_exposition(metrics: RuntimeMetrics) -> None:
    port = free_port()
    server = serve(metrics.exposition, "127.0.0.1", port)
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert "isvc_model_ready" in response.text
    finally:
        server.shutdown()
        server.server_close()


MULTIPROCESS_SCRIPT = """
import sys
from isvc_runtime.config import ModelSettings
from isvc_runtime.metrics import RuntimeMetrics
from isvc_runtime.registry import ModelRegistry
from isvc_runtime.runner import ModelRunner

registry = ModelRegistry()
registry.add(ModelRunner("mnist", ModelSettings()))
metrics = RuntimeMetrics(registry, isvc="a", revision="r", hostname="h", multiprocess_dir=sys.argv[1])
for _ in range(int(sys.argv[2])):
    metrics.request_finished(endpoint="v1_predict", model="mnist", status=200, seconds=0.002)
if sys.argv[3] == "print":
    sys.stdout.write(metrics.exposition().decode())
"""


def test_several_processes_add_up_in_multiprocess_mode(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, each process's counts land in shared files and any process's
    endpoint reports the sum, TorchServe's series included."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    run = [sys.executable, "-c", MULTIPROCESS_SCRIPT, str(tmp_path)]
    subprocess.run([*run, "3", "quiet"], env=env, check=True, timeout=60)
    text = subprocess.run(
        [*run, "4", "print"], env=env, check=True, timeout=60, capture_output=True, text=True
    ).stdout
    assert (
        'isvc_requests_total{code="200",endpoint="v1_predict",isvc="a",model="mnist",'
        'protocol="v1",revision="r"} 7.0' in text
    )
    assert 'ts_inference_requests_total{model_name="mnist",model_version="default",hostname="h"} 7.0' in text
