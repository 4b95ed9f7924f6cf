"""Prometheus metrics of the runtime: an :class:`~isvc_runtime.observe.Observer` that counts and times
requests, batches and model loads, served on the metrics port (8082, like TorchServe) and on the
inference port at ``GET /metrics``.

Two families of series:

- ``isvc_*``: requests by model, protocol, endpoint and status code; request, queue, inference and
  explanation latency histograms in seconds with buckets from 0.5 ms; rows per handler call; model
  readiness and load time. Every ``isvc_*`` series carries ``isvc`` and ``revision`` labels, read
  once from the environment (``ISVC_NAME``, else ``K_SERVICE`` without ``-predictor-default``; Knative's
  ``K_REVISION``), so a canary revision and the stable one are told apart in the same query.
- TorchServe's own names, labels and units, derived from the ``isvc_*`` values at scrape time (no
  cost per request): ``ts_inference_requests_total`` (Count), ``ts_inference_latency_microseconds`` and
  ``ts_queue_latency_microseconds`` (Microseconds), all counters labelled ``model_name``,
  ``model_version``, ``hostname``; and ``Requests2XX``/``Requests4XX``/``Requests5XX`` labelled
  ``Level``, ``Hostname``. As TorchServe does, a request that names no version counts under
  ``model_version="default"`` (this runtime counts every inference request there).
- What handlers record through ``context.metrics`` (TorchServe's custom-metrics API,
  :mod:`isvc_runtime.handler_metrics`), as TorchServe's prometheus mode exports it: the metric's own
  name, its dimensions (``ModelName``, ``Level`` and the handler's) plus ``Hostname`` as labels.

A server of several processes (``--processes``, :mod:`isvc_runtime.processes`) sets
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before they start: prometheus_client then keeps the
values in shared files, the endpoint merges every process's values (MultiProcessCollector) and the
TorchServe series are derived from the merged values, so nothing here changes. What handlers record
through ``context.metrics`` stays in the process that recorded it.

Hot path: one dict lookup for the label children of a (endpoint, model, status) triple, then a
counter increment and a histogram observation; model names from request paths are mapped to the
served names first, so a client cannot grow the label sets.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString
from starlette.requests import Request
from starlette.responses import Response

from .handler_metrics import HISTOGRAM, HISTOGRAM_BUCKETS, HandlerMetric, HistogramValue
from .observe import Observer, set_observer
from .registry import ModelRegistry

log = logging.getLogger("isvc_runtime.metrics")

DEFAULT_METRICS_PORT = 8082  # TorchServe's metrics_address port
# What generate_latest writes (prometheus_client's CONTENT_TYPE_LATEST may name a newer version).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds; ms-scale models land in the low buckets, explanations and cold paths in the high ones.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Endpoints that run a model (TorchServe counts these in ts_inference_requests_total).
EXPLAIN_ENDPOINTS = frozenset({"v1_explain", "v2_explain"})
INFERENCE_ENDPOINTS = frozenset({"v1_predict", "v2_infer", "grpc_infer", "predictions"}) | EXPLAIN_ENDPOINTS
IDENTITY = ("isvc", "revision")
# The families of the runtime's own registry (ours, prometheus_client's process and platform collectors).
RESERVED_PREFIXES = ("isvc_", "process_", "python_")


def protocol_of(endpoint: str) -> str:
    """The protocol an endpoint label belongs to: ``v1``, ``v2``, ``grpc`` (the gRPC front end's
    ``grpc_<method>``), ``torchserve`` or ``other``."""
    if endpoint.startswith("grpc_"):
        return "grpc"
    if endpoint.startswith("v1_"):
        return "v1"
    if endpoint.startswith("v2_"):
        return "v2"
    if endpoint == "predictions":
        return "torchserve"
    return "other"


def identity_from_env(env: dict[str, str] | os._Environ[str]) -> tuple[str, str]:
    """``(isvc, revision)`` of this pod: ``ISVC_NAME`` (set by the operator), else the Knative service
    name without the predictor suffix; ``K_REVISION`` (set by Knative). Empty outside a cluster."""
    isvc = env.get("ISVC_NAME", "")
    if not isvc:
        service = env.get("K_SERVICE", "")
        for suffix in ("-predictor-default", "-predictor"):
            if service.endswith(suffix):
                service = service[: -len(suffix)]
                break
        isvc = service
    return isvc, env.get("K_REVISION", "")


def metrics_address(port: int | None, host: str, env: dict[str, str] | os._Environ[str]) -> tuple[str, int]:
    """Where the metrics listener binds: ``--metrics-port`` on the inference host, else TorchServe's
    ``TS_METRICS_ADDRESS`` (``http://HOST:PORT``), else port 8082 on the inference host."""
    if port is not None:
        return host, port
    address = env.get("TS_METRICS_ADDRESS")
    if address:
        parts = urlsplit(address if "//" in address else f"//{address}")
        try:
            if parts.port is not None:
                return parts.hostname or host, parts.port
        except ValueError:
            log.warning("TS_METRICS_ADDRESS %r has no valid port; using %d", address, DEFAULT_METRICS_PORT)
    return host, DEFAULT_METRICS_PORT


def _torchserve_family(name: str, unit: str, kind: str = "counter") -> Metric:
    # TorchServe's exposition: a counter's sample is named as its family (no ``_total`` added).
    return Metric(name, f"Torchserve prometheus {kind} metric with unit: {unit}", kind)


_INVALID_NAME = re.compile(r"[^a-zA-Z0-9_:]")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]")


def _prometheus_name(name: str, invalid: re.Pattern[str]) -> str:
    name = invalid.sub("_", name)
    return f"_{name}" if not name or name[0].isdigit() else name


def handler_families(metrics: Iterable[HandlerMetric], hostname: str, taken: set[str]) -> list[Metric]:
    """The metrics handlers recorded through ``context.metrics`` (:mod:`.handler_metrics`), as TorchServe's
    prometheus mode shows them: the metric's name, its dimensions as labels plus ``Hostname``. Names are
    made valid Prometheus names; a name already ``taken`` (the runtime's own series), or taken by a metric
    of another type, is skipped rather than breaking the exposition. Pure: metrics in, families out."""
    families: dict[str, Metric] = {}
    for metric in metrics:
        name = _prometheus_name(metric.name, _INVALID_NAME)
        family = families.get(name)
        clash = family is not None and family.type != metric.kind
        if clash or name in taken or name.startswith(RESERVED_PREFIXES):
            log.debug("handler metric %s skipped: its name is taken", metric.name)
            continue
        if family is None:
            family = families[name] = _torchserve_family(name, metric.unit, metric.kind)
        label_names = [_prometheus_name(n, _INVALID_LABEL) for n in metric.dimension_names]
        for key, value in metric.snapshot().items():
            labels = {**dict(zip(label_names, key, strict=True)), "Hostname": hostname}
            if metric.kind != HISTOGRAM:
                family.add_sample(name, labels, float(value))  # type: ignore[arg-type]
                continue
            assert isinstance(value, HistogramValue)
            cumulative = 0
            for bound, count in zip((*HISTOGRAM_BUCKETS, float("inf")), value.buckets, strict=True):
                cumulative += count
                family.add_sample(f"{name}_bucket", {**labels, "le": floatToGoString(bound)}, cumulative)
            family.add_sample(f"{name}_count", labels, value.count)
            family.add_sample(f"{name}_sum", labels, value.total)
    return list(families.values())


def torchserve_families(families: Iterable[Metric], hostname: str) -> list[Metric]:
    """TorchServe's series from the runtime's own: request counts and summed latencies (µs) per model,
    status classes for every API request. Pure: families in, families out."""
    requests: dict[str, float] = defaultdict(float)
    latency: dict[str, float] = defaultdict(float)
    queue: dict[str, float] = defaultdict(float)
    classes = {"2": 0.0, "4": 0.0, "5": 0.0}
    for family in families:
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "isvc_requests_total":
                code = labels.get("code", "")
                if code[:1] in classes:
                    classes[code[:1]] += sample.value
                if labels.get("endpoint") in INFERENCE_ENDPOINTS and labels.get("model"):
                    requests[labels["model"]] += sample.value
            elif sample.name == "isvc_request_duration_seconds_sum":
                if labels.get("endpoint") in INFERENCE_ENDPOINTS and labels.get("model"):
                    latency[labels["model"]] += sample.value * 1e6
            elif sample.name == "isvc_queue_duration_seconds_sum" and labels.get("model"):
                queue[labels["model"]] += sample.value * 1e6
    out = []
    for name, unit, values in (
        ("ts_inference_requests_total", "Count", requests),
        ("ts_inference_latency_microseconds", "Microseconds", latency),
        ("ts_queue_latency_microseconds", "Microseconds", queue),
    ):
        family = _torchserve_family(name, unit)
        for model, value in sorted(values.items()):
            family.add_sample(
                name, {"model_name": model, "model_version": "default", "hostname": hostname}, value
            )
        out.append(family)
    for digit, value in classes.items():
        name = f"Requests{digit}XX"
        family = _torchserve_family(name, "Count")
        family.add_sample(name, {"Level": "Host", "Hostname": hostname}, value)
        out.append(family)
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def torchserve_exposition(families: Iterable[Metric]) -> bytes:
    """Text format written as TorchServe writes it: ``# TYPE <name> counter`` with the sample under the
    same name (prometheus_client would append ``_total`` to the HELP and TYPE lines of a counter)."""
    lines = []
    for family in families:
        lines.append(f"# HELP {family.name} {family.documentation}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for sample in family.samples:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels.items())
            lines.append(f"{sample.name}{{{labels}}} {floatToGoString(sample.value)}")
    return ("\n".join(lines) + "\n").encode()


def serve(exposition: Callable[[], bytes], host: str, port: int) -> ThreadingHTTPServer:
    """``GET /metrics`` (any path, as prometheus_client does) on a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = exposition()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server


class RuntimeMetrics(Observer):
    """The metrics of one runtime process, in a registry of their own."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        isvc: str = "",
        revision: str = "",
        hostname: str | None = None,
        multiprocess_dir: str | None = None,
    ) -> None:
        self.identity = (isvc, revision)
        self.hostname = hostname or socket.gethostname()
        # Path names (aliases included) → served name; anything else is labelled "" (bounded labels).
        self.runners = registry.runners
        self.model_labels: dict[str | None, str] = {
            name: registry.get(name).name for name in registry.names()
        }
        own = CollectorRegistry(auto_describe=True)
        model = (*IDENTITY, "model")
        self.requests = Counter(
            "isvc_requests",
            "Requests answered (HTTP and gRPC), by model, protocol, endpoint and (HTTP) status code",
            (*model, "protocol", "endpoint", "code"),
            registry=own,
        )
        self.request_seconds = Histogram(
            "isvc_request_duration_seconds",
            "Time from a request's arrival to its response, by model, protocol and endpoint",
            (*model, "protocol", "endpoint"),
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self.queue_seconds = Histogram(
            "isvc_queue_duration_seconds",
            "Time a request waited in its model's batch queue",
            model,
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self.inference_seconds = Histogram(
            "isvc_inference_duration_seconds",
            "Wall time of one handler call (one batch): preprocess, inference, postprocess",
            model,
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self.explain_seconds = Histogram(
            "isvc_explain_duration_seconds",
            "Time to answer one explanation request (v1 :explain, v2 explain)",
            model,
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self.batch_rows = Histogram(
            "isvc_batch_size",
            "Rows handed to the handler in one call",
            model,
            buckets=BATCH_BUCKETS,
            registry=own,
        )
        self.batch_failures = Counter("isvc_batch_failures", "Handler calls that raised", model, registry=own)
        self.model_ready = Gauge(
            "isvc_model_ready",
            "1 when the model is loaded and serving, else 0",
            model,
            multiprocess_mode="livemin",
            registry=own,
        )
        self.model_load_seconds = Gauge(
            "isvc_model_load_seconds",
            "Seconds the model's last load took (handler initialize included)",
            model,
            multiprocess_mode="livemax",
            registry=own,
        )
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
        self._batch_children: dict[str, tuple[Any, Any, Any, Any]] = {}
        # Every model's series exist from the start (at 0), so the first requests show up in rate().
        for runner in registry.runners:
            self.model_ready.labels(*self.identity, runner.name).set(1 if runner.ready else 0)
            self._batch_children_of(runner.name)
            self.explain_seconds.labels(*self.identity, runner.name)
        if multiprocess_dir:
            self.registry = CollectorRegistry()
            merged = MultiProcessCollector(None, path=multiprocess_dir)
            self.registry.register(merged)
            self._torchserve_source: Callable[[], Iterable[Metric]] = merged.collect
        else:
            own_metrics = (self.requests, self.request_seconds, self.queue_seconds)
            self.registry = own
            self._torchserve_source = lambda: [f for m in own_metrics for f in m.collect()]
            ProcessCollector(registry=own)
            PlatformCollector(registry=own)
            GCCollector(registry=own)

    # --- Observer: called on the event loop (requests, batches) or the loader thread (loads) ---

    def request_finished(self, *, endpoint: str, model: str | None, status: int, seconds: float) -> None:
        key = (endpoint, self.model_labels.get(model, ""), status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = self._new_request_children(*key)
        count, latency, explain = children
        count.inc()
        latency.observe(seconds)
        if explain is not None:
            explain.observe(seconds)

    def _new_request_children(self, endpoint: str, model: str, status: int) -> tuple[Any, Any, Any]:
        protocol = protocol_of(endpoint)
        return (
            self.requests.labels(*self.identity, model, protocol, endpoint, str(status)),
            self.request_seconds.labels(*self.identity, model, protocol, endpoint),
            self.explain_seconds.labels(*self.identity, model) if endpoint in EXPLAIN_ENDPOINTS else None,
        )

    def batch_finished(
        self,
        *,
        model: str,
        rows: int,
        requests: int,
        queue_seconds: Sequence[float],
        inference_seconds: float,
        ok: bool,
    ) -> None:
        children = self._batch_children.get(model) or self._batch_children_of(model)
        batch, inference, queue, failures = children
        batch.observe(rows)
        inference.observe(inference_seconds)
        for waited in queue_seconds:
            queue.observe(waited)
        if not ok:
            failures.inc()

    def _batch_children_of(self, model: str) -> tuple[Any, Any, Any, Any]:
        labels = (*self.identity, model)
        children = self._batch_children[model] = (
            self.batch_rows.labels(*labels),
            self.inference_seconds.labels(*labels),
            self.queue_seconds.labels(*labels),
            self.batch_failures.labels(*labels),
        )
        return children

    def model_loaded(self, *, model: str, seconds: float, ok: bool) -> None:
        self.model_ready.labels(*self.identity, model).set(1 if ok else 0)
        self.model_load_seconds.labels(*self.identity, model).set(seconds)

    # --- exposition ---

    def exposition(self) -> bytes:
        """The runtime's series, then TorchServe's, derived from them now, then what the handlers
        recorded through ``context.metrics``."""
        torchserve = torchserve_families(self._torchserve_source(), self.hostname)
        recorded = [
            metric
            for runner in self.runners
            if runner.model is not None
            for metric in runner.model.context.metrics.metrics()
        ]
        custom = handler_families(recorded, self.hostname, {f.name for f in torchserve})
        return generate_latest(self.registry) + torchserve_exposition([*torchserve, *custom])

    async def endpoint(self, request: Request) -> Response:
        return Response(self.exposition(), media_type=CONTENT_TYPE)


def install(registry: ModelRegistry, *, host: str, port: int | None) -> RuntimeMetrics:
    """Observe this process's models and serve the metrics on their own port (see
    :func:`metrics_address`; port 0 serves them on the inference port only). A port already taken
    is logged, not fatal: the inference port still serves ``/metrics``."""
    disable_created_metrics()  # the *_created series double the series count and no query uses them
    isvc, revision = identity_from_env(os.environ)
    metrics = RuntimeMetrics(
        registry,
        isvc=isvc,
        revision=revision,
        multiprocess_dir=os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None,
    )
    set_observer(metrics)
    bind_host, bind_port = metrics_address(port, host, os.environ)
    if bind_port:
        try:
            serve(metrics.exposition, bind_host, bind_port)
        except OSError as exc:
            log.warning(
                "metrics port %s:%d unavailable (%s); /metrics stays on the inference port",
                bind_host,
                bind_port,
                exc.strerror or exc,
            )
        else:
            log.info("metrics on http://%s:%d/metrics", bind_host, bind_port)
    return metrics
