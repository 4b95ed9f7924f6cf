"""What ``context.metrics`` offers handlers: TorchServe's custom-metrics API (``add_counter``,
``add_time``, ``add_metric``, ... in ``ts/metrics/metric_cache_abstract.py``), with TorchServe's
defaults, kept in memory for the Prometheus exporter (:mod:`isvc_runtime.metrics`), which serves them
as TorchServe's prometheus mode does: the metric's own name, its dimensions as labels plus
``Hostname``, ``# HELP ... Torchserve prometheus <type> metric with unit: <unit>``.

As in TorchServe, every metric added through the ``add_*`` calls carries the dimensions
``ModelName`` (the served name) and ``Level`` (``Model``; ``Error`` for :meth:`HandlerMetrics.add_error`)
besides those the handler passes; counters add up, gauges keep the latest value, histograms count
into Prometheus' default buckets. A call that does not fit its metric (other dimension names, a
negative counter increment) is logged and dropped, as TorchServe does: handlers never fail on metrics.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("isvc_runtime.handler_metrics")

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
KINDS = (COUNTER, GAUGE, HISTOGRAM)
# The Java Prometheus client's default buckets, which TorchServe's histograms use.
HISTOGRAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def metric_kind(metric_type: Any, default: str) -> str:
    """``counter``, ``gauge`` or ``histogram`` from TorchServe's ``MetricTypes`` enum or a string."""
    value = getattr(metric_type, "value", metric_type)
    return value.lower() if isinstance(value, str) and value.lower() in KINDS else default


@dataclass(slots=True)
class HistogramValue:
    buckets: list[int]  # per upper bound of HISTOGRAM_BUCKETS, not cumulative; the last is +Inf
    total: float = 0.0
    count: int = 0


class HandlerMetric:
    """One metric a handler created: its dimension names, and a value per combination of dimension
    values. TorchServe's ``CachingMetric`` interface (``add_or_update``, ``update``)."""

    __slots__ = ("_lock", "dimension_names", "kind", "name", "unit", "values")

    def __init__(self, name: str, unit: str, dimension_names: Sequence[str] = (), metric_type: Any = None):
        self.name = name
        self.unit = unit
        self.dimension_names = [str(d) for d in dimension_names]
        self.kind = metric_kind(metric_type, COUNTER)
        self.values: dict[tuple[str, ...], float | HistogramValue] = {}
        self._lock = threading.Lock()

    @property
    def metric_type(self) -> str:
        return self.kind

    def add_or_update(self, value: float, dimension_values: Sequence[Any] = (), request_id: str = "") -> None:
        key = tuple(str(v) for v in dimension_values)
        try:
            number = float(value)
        except (TypeError, ValueError):
            log.warning("metric %s: value %r is not a number; dropped", self.name, value)
            return
        if len(key) != len(self.dimension_names):
            log.warning(
                "metric %s: dimension values %s do not match its dimensions %s; dropped",
                self.name,
                list(key),
                self.dimension_names,
            )
            return
        if self.kind == COUNTER and number < 0:
            log.warning("metric %s: a counter cannot decrease (%g); dropped", self.name, number)
            return
        with self._lock:
            if self.kind == COUNTER:
                previous = self.values.get(key, 0.0)
                assert isinstance(previous, float)
                self.values[key] = previous + number
            elif self.kind == GAUGE:
                self.values[key] = number
            else:
                histogram = self.values.get(key)
                if not isinstance(histogram, HistogramValue):
                    histogram = self.values[key] = HistogramValue([0] * (len(HISTOGRAM_BUCKETS) + 1))
                histogram.buckets[bisect.bisect_left(HISTOGRAM_BUCKETS, number)] += 1
                histogram.total += number
                histogram.count += 1

    def update(self, value: float, dimension_values: Sequence[Any] = ()) -> None:  # older TorchServe API
        self.add_or_update(value, dimension_values)

    def snapshot(self) -> dict[tuple[str, ...], float | HistogramValue]:
        with self._lock:
            return {
                key: HistogramValue(list(v.buckets), v.total, v.count) if isinstance(v, HistogramValue) else v
                for key, v in self.values.items()
            }


def _dimension(dimension: Any) -> tuple[str, str]:
    """``(name, value)`` of TorchServe's ``Dimension`` (``.name``, ``.value``) or a pair."""
    if hasattr(dimension, "name") and hasattr(dimension, "value"):
        return str(dimension.name), str(dimension.value)
    name, value = dimension
    return str(name), str(value)


class HandlerMetrics:
    """``context.metrics`` of one model."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self._metrics: dict[tuple[str, str], HandlerMetric] = {}
        self._lock = threading.Lock()
        self.request_ids: Any = None

    def set_request_ids(self, request_ids: Any) -> None:
        self.request_ids = request_ids

    def metrics(self) -> list[HandlerMetric]:
        with self._lock:
            return list(self._metrics.values())

    def _record(
        self, name: str, value: float, unit: str, dimensions: Sequence[Any], kind: str, level: str = "Model"
    ) -> None:
        try:
            pairs = [_dimension(d) for d in dimensions]
        except (TypeError, ValueError):
            log.warning("metric %s: dimensions %r are not (name, value) pairs; dropped", name, dimensions)
            return
        names = [n for n, _ in pairs]
        if level == "Model" and "ModelName" not in names:
            pairs.append(("ModelName", self.model_name))
        if "Level" not in names:
            pairs.append(("Level", level))
        metric = self.add_metric_to_cache(name, unit, [n for n, _ in pairs], kind)
        metric.add_or_update(value, [v for _, v in pairs])

    def add_metric(
        self,
        name: str,
        value: float,
        unit: str = "",
        idx: Any = None,
        dimensions: Sequence[Any] = (),
        metric_type: Any = COUNTER,
    ) -> None:
        self._record(name, value, unit, dimensions, metric_kind(metric_type, COUNTER))

    def add_counter(self, name: str, value: float, idx: Any = None, dimensions: Sequence[Any] = ()) -> None:
        self._record(name, value, "count", dimensions, COUNTER)

    def add_time(
        self,
        name: str,
        value: float,
        idx: Any = None,
        unit: str = "ms",
        dimensions: Sequence[Any] = (),
        metric_type: Any = GAUGE,
    ) -> None:
        self._record(name, value, unit, dimensions, metric_kind(metric_type, GAUGE))

    def add_size(
        self,
        name: str,
        value: float,
        idx: Any = None,
        unit: str = "MB",
        dimensions: Sequence[Any] = (),
        metric_type: Any = GAUGE,
    ) -> None:
        self._record(name, value, unit, dimensions, metric_kind(metric_type, GAUGE))

    def add_percent(
        self,
        name: str,
        value: float,
        idx: Any = None,
        dimensions: Sequence[Any] = (),
        metric_type: Any = GAUGE,
    ) -> None:
        self._record(name, value, "percent", dimensions, metric_kind(metric_type, GAUGE))

    def add_error(self, name: str, value: float, dimensions: Sequence[Any] = ()) -> None:
        self._record(name, value, "", dimensions, COUNTER, level="Error")

    def get_metric(self, metric_name: str, metric_type: Any = COUNTER) -> HandlerMetric:
        metric = self._metrics.get((metric_name, metric_kind(metric_type, COUNTER)))
        if metric is None:
            raise KeyError(metric_name)
        return metric

    def add_metric_to_cache(
        self, metric_name: str, unit: str, dimension_names: Sequence[str] = (), metric_type: Any = COUNTER
    ) -> HandlerMetric:
        kind = metric_kind(metric_type, COUNTER)
        with self._lock:
            metric = self._metrics.get((metric_name, kind))
            if metric is None:
                metric = self._metrics[(metric_name, kind)] = HandlerMetric(
                    metric_name, unit, dimension_names, kind
                )
        return metric
