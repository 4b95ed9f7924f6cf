"""The operator's Prometheus metrics: reconciles by result, reconcile duration, InferenceServices by
readiness. Served on port 8081, the port the Deployment in deploy/ declares and annotates for scraping:
on every interface in a pod, on loopback elsewhere; ``ISVC_OPERATOR_METRICS_ADDRESS=HOST:PORT`` chooses
(port 0: not served).

Results: ``changed`` (the ksvc, VirtualService or status was written), ``unchanged``, ``render_error``
(the isvc cannot be rendered; its status says why), ``api_error`` and ``error`` (both retried later).
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric

log = logging.getLogger("isvc_operator.metrics")

DEFAULT_METRICS_PORT = 8081
METRICS_ADDRESS_ENV = "ISVC_OPERATOR_METRICS_ADDRESS"
RESULTS = ("changed", "unchanged", "render_error", "api_error", "error")
READINESS = ("True", "False", "Unknown")


def metrics_address(env: Mapping[str, str]) -> tuple[str, int]:
    """``(host, port)`` to serve on: ISVC_OPERATOR_METRICS_ADDRESS, else 8081 on every interface inside
    a pod (KUBERNETES_SERVICE_HOST is set) and on loopback outside one."""
    default_host = "0.0.0.0" if env.get("KUBERNETES_SERVICE_HOST") else "127.0.0.1"
    address = env.get(METRICS_ADDRESS_ENV)
    if address:
        host, _, port = address.rpartition(":")
        if port.isdigit() and int(port) < 65536:
            return host or default_host, int(port)
        log.warning(
            "%s=%r is not HOST:PORT; using port %d", METRICS_ADDRESS_ENV, address, DEFAULT_METRICS_PORT
        )
    return default_host, DEFAULT_METRICS_PORT


def readiness(isvc: dict[str, Any]) -> str:
    """The status of an InferenceService's Ready condition: True, False or Unknown (none yet)."""
    for condition in (isvc.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            status = condition.get("status")
            return status if status in READINESS else "Unknown"
    return "Unknown"


def count_by_readiness(isvcs: Iterable[dict[str, Any]]) -> dict[str, int]:
    tally = Tally(readiness(isvc) for isvc in isvcs)
    return {ready: tally.get(ready, 0) for ready in READINESS}


class InferenceServicesCollector:
    """``isvc_operator_inferenceservices{ready}`` from the isvcs the operator knows, at scrape time."""

    def __init__(self) -> None:
        self.isvcs: Callable[[], Iterable[dict[str, Any]]] = lambda: ()

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "isvc_operator_inferenceservices", "InferenceServices by their Ready condition", labels=["ready"]
        )
        for ready, count in count_by_readiness(self.isvcs()).items():
            family.add_metric([ready], count)
        yield family


registry = CollectorRegistry(auto_describe=True)
reconciles = Counter(
    "isvc_operator_reconciles", "InferenceService reconciles, by result", ["result"], registry=registry
)
reconcile_seconds = Histogram(
    "isvc_operator_reconcile_duration_seconds",
    "Time one InferenceService reconcile took, API calls included",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=registry,
)
inferenceservices = InferenceServicesCollector()
registry.register(inferenceservices)
for _result in RESULTS:  # every result is a series from the start: rate() sees its first increase
    reconciles.labels(_result)


def observe_reconcile(result: str, seconds: float) -> None:
    reconciles.labels(result).inc()
    reconcile_seconds.observe(seconds)


def serve(isvcs: Callable[[], Iterable[dict[str, Any]]], host: str, port: int) -> None:
    """Count ``isvcs()`` by readiness at each scrape and serve the metrics on ``host:port`` (0: not
    served); a port that is taken is logged, not fatal."""
    inferenceservices.isvcs = isvcs
    if not port:
        return
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.warning("operator metrics address %s:%d unavailable: %s", host, port, exc.strerror or exc)
    else:
        log.info("metrics on http://%s:%d/metrics", host, port)
