"""What handlers record through ``context.metrics`` (TorchServe's custom-metrics API) reaches
``/metrics`` as TorchServe's prometheus mode writes it: the metric's name, its dimensions as labels
(``ModelName`` and ``Level`` added) plus ``Hostname``, counters adding up, gauges keeping the latest."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from isvc_runtime.config import ModelSettings
from isvc_runtime.handler_metrics import HandlerMetrics
from isvc_runtime.metrics import RuntimeMetrics
from isvc_runtime.registry import ModelRegistry
from isvc_runtime.runner import ModelRunner
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture()
def recorded() -> tuple[RuntimeMetrics, HandlerMetrics]:
    registry = ModelRegistry()
    runner = ModelRunner("mnist", ModelSettings(), version="1.0")
    registry.add(runner)
    handler_metrics = HandlerMetrics("mnist")
    context = SimpleNamespace(metrics=handler_metrics)
    loaded = SimpleNamespace(version="1.0", merge_plan=None, handler=None, entry_point=None, context=context)
    runner.set_loaded(loaded)  # type: ignore[arg-type]
    return RuntimeMetrics(registry, hostname="pod-a"), handler_metrics


def families(metrics: RuntimeMetrics) -> dict[str, object]:
    text = metrics.exposition().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_counters_add_up_and_gauges_keep_the_latest_value_with_torchserves_labels(
    recorded: tuple[RuntimeMetrics, HandlerMetrics],
) -> None:
    metrics, handler = recorded
    handler.add_counter("QuadrantAnswers", 3)
    handler.add_counter("QuadrantAnswers", 2)
    handler.add_time("HandlerTime", 12.5, None, "ms")
    handler.add_time("HandlerTime", 7.25, None, "ms")
    handler.add_error("DecodeErrors", 1)
    text = metrics.exposition().decode()
    assert "# HELP QuadrantAnswers Torchserve prometheus counter metric with unit: count" in text
    assert "# TYPE HandlerTime gauge" in text
    found = families(metrics)
    model = {"ModelName": "mnist", "Level": "Model", "Hostname": "pod-a"}
    [answers] = found["QuadrantAnswers"].samples  # type: ignore[attr-defined]
    assert (answers.labels, answers.value) == (model, 5.0)
    assert '\nQuadrantAnswers{ModelName="mnist",Level="Model",Hostname="pod-a"} 5.0\n' in text  # no _total
    [time] = found["HandlerTime"].samples  # type: ignore[attr-defined]
    assert (time.labels, time.value) == (model, 7.25)
    [errors] = found["DecodeErrors"].samples  # type: ignore[attr-defined]
    assert errors.labels == {"Level": "Error", "Hostname": "pod-a"} and errors.value == 1.0


def test_dimensions_are_labels_and_histograms_count_into_buckets(
    recorded: tuple[RuntimeMetrics, HandlerMetrics],
) -> None:
    metrics, handler = recorded
    device = SimpleNamespace(name="Device", value="cpu")  # as ts.metrics.dimension.Dimension
    for seconds in (0.003, 0.2, 4.0):
        handler.add_metric("DecodeSeconds", seconds, "s", dimensions=[device], metric_type="histogram")
    [family] = [f for name, f in families(metrics).items() if name == "DecodeSeconds"]
    by_name = {(s.name, s.labels.get("le")): s for s in family.samples}  # type: ignore[attr-defined]
    assert by_name[("DecodeSeconds_count", None)].value == 3
    assert by_name[("DecodeSeconds_sum", None)].value == pytest.approx(4.203)
    assert by_name[("DecodeSeconds_bucket", "0.005")].value == 1
    assert by_name[("DecodeSeconds_bucket", "0.25")].value == 2
    assert by_name[("DecodeSeconds_bucket", "+Inf")].value == 3
    assert by_name[("DecodeSeconds_count", None)].labels == {
        "Device": "cpu",
        "ModelName": "mnist",
        "Level": "Model",
        "Hostname": "pod-a",
    }


def test_metrics_that_cannot_be_exported_are_dropped_not_the_exposition(
    recorded: tuple[RuntimeMetrics, HandlerMetrics],
) -> None:
    metrics, handler = recorded
    handler.add_counter("isvc_requests_total", 1)  # the runtime's own name
    handler.add_counter("Requests2XX", 1)  # one of TorchServe's series the runtime writes
    handler.add_counter("bad.name-1", 1)  # made a valid name
    handler.add_counter("Negative", -1)  # counters do not decrease: dropped, logged
    handler.add_metric_to_cache("Pairs", "count", ["A", "B"]).add_or_update(1, ["only-one"])  # dropped
    found = families(metrics)
    assert found["bad_name_1"].samples[0].value == 1.0  # type: ignore[attr-defined]
    assert [s.value for s in found["Requests2XX"].samples] == [0.0]  # type: ignore[attr-defined]
    assert "Negative" not in found or not found["Negative"].samples  # type: ignore[attr-defined]
    assert "Pairs" not in found or not found["Pairs"].samples  # type: ignore[attr-defined]
