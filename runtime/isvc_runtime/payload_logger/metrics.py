"""The payload logger's Prometheus series, read from its plain counters at scrape time (nothing per event):
``isvc_logger_events_sent_total`` and ``isvc_logger_events_dropped_total`` by ``reason``, each with the
runtime's ``isvc`` and ``revision`` labels. Register on the runtime's registry:
``registry.register(LoggerCollector(payload_logger, isvc, revision))``."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from .dispatcher import DROP_REASONS, PayloadLogger


class LoggerCollector(Collector):
    def __init__(self, payload_logger: PayloadLogger, isvc: str = "", revision: str = "") -> None:
        self._logger = payload_logger
        self._identity = [isvc, revision]

    def collect(self) -> Iterator[Metric]:
        sent = CounterMetricFamily("isvc_logger_events_sent", "CloudEvents the sink accepted (2xx)",
                                   labels=["isvc", "revision"])
        sent.add_metric(self._identity, self._logger.sent)
        dropped = CounterMetricFamily("isvc_logger_events_dropped", "CloudEvents given up, by reason",
                                      labels=["isvc", "revision", "reason"])
        for reason in DROP_REASONS:
            dropped.add_metric([*self._identity, reason], self._logger.dropped[reason])
        yield sent
        yield dropped
