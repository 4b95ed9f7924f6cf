"""KFServing's payload logger, in process: each inference request and/or response sent as a CloudEvent
(HTTP binary mode) to a sink, without ever delaying or failing the inference.

- ``settings``: the runtime's ``--logger-*`` flags and the isvc identity (env) as one typed value.
- ``events``: pure: which events a mode sends, an event's HTTP head.
- ``sink``: one keep-alive HTTP/1.1 connection to the sink (asyncio streams, httptools parses answers).
- ``dispatcher``: :class:`PayloadLogger`: a bounded queue, sender tasks, retries with backoff, drops
  counted by reason, a warning at most once a minute.
- ``middleware``: :class:`PayloadLoggingMiddleware`, the pure ASGI middleware that logs v1/v2 inference
  requests and answers under the request's id (made by the HTTP layer, the answer's ``x-request-id``).
- ``metrics``: :class:`LoggerCollector`, the drop and send counters for the runtime's Prometheus registry.

Follows KServe's logger (kserve/kserve ``pkg/logger/worker.go``: the ``org.kubeflow.serving.inference.*``
types and the ``inferenceservicename``, ``namespace``, ``component``, ``endpoint`` extensions; the id of the
request as ``ce-id``), but inside the runtime's event loop rather than an agent sidecar.
"""

from .dispatcher import PayloadLogger
from .events import REQUEST, RESPONSE
from .settings import LoggerSettings, add_logger_arguments, logger_settings

__all__ = ["REQUEST", "RESPONSE", "LoggerSettings", "PayloadLogger", "add_logger_arguments",
           "logger_settings"]
