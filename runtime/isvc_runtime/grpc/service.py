"""The gRPC front end: ``inference.GRPCInferenceService`` over the REST endpoints' data plane
(:mod:`isvc_runtime.dataplane`), and ``grpc.health.v1`` health, on a ``grpc.aio`` server in the HTTP
server's event loop (a gRPC request batches together with REST requests).

Thin: each method parses its message (:func:`~isvc_runtime.codecs.protobuf.parse`, so a malformed one is
INVALID_ARGUMENT, not grpc's INTERNAL "Exception deserializing request"), asks the data plane, encodes
the answer (:mod:`isvc_runtime.codecs.protobuf`). Errors are the REST layer's
:class:`~isvc_runtime.errors.ApiError` with the same messages, their HTTP status mapped to a status code
(KServe ``python/kserve/kserve/errors.py`` maps its errors alike). Each call is reported to the observer
(metrics) as a REST request is, labelled ``grpc_<method>`` with the HTTP status its code stands for.

``ModelInfer`` is the gRPC inference: it gets its request id as a REST inference does (the client's
``x-request-id`` metadata when it is a plain token, else a new one), sent back in the call's trailing
metadata ``x-request-id`` (failed calls' too; trailers cost no extra frame, initial metadata sent early
would); with the payload logger on, its request and its answer become the
``org.kubeflow.serving.inference.request`` / ``.response`` events under that id. Their body is the message
as gRPC carries it over HTTP/2 (the 5-byte length prefix, uncompressed, then the serialized
``inference.ModelInferRequest`` / ``ModelInferResponse``) with content type ``application/grpc``: what
KServe's logger agent sends for a gRPC call it proxies (kserve/kserve ``pkg/logger/handler.go`` logs the
HTTP body as read and the request's Content-Type, the response only when the call succeeded, as here: a
failed call has no answer message, its status is in the trailers).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from grpc import aio

from ..codecs import protobuf
from ..dataplane import DataPlane
from ..errors import ApiError
from ..observe import get_observer
from ..payload_logger import PayloadLogger
from ..rest.middleware import request_id as checked_request_id
from .stubs import SERVICE_NAME, AsyncHealthServicer, health_pb2, health_pb2_grpc, pb

log = logging.getLogger("isvc_runtime.grpc")

STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
REQUEST_ID_KEY = "x-request-id"
GRPC_CONTENT_TYPE = "application/grpc"
#: The health service whose status says whether the server answers at all (liveness and start-up probes);
#: the operator's pod.GRPC_LIVENESS_SERVICE names it too.
LIVENESS_SERVICE = "liveness"

Method = Callable[..., Awaitable[Any]]


def status_code(http_status: int) -> grpc.StatusCode:
    return STATUS_CODES.get(http_status, grpc.StatusCode.INTERNAL)


def call_request_id(metadata: Mapping[str, Any]) -> str:
    """The call's request id: the client's ``x-request-id`` metadata when it is a plain token, else new."""
    given = metadata.get(REQUEST_ID_KEY)
    return checked_request_id(given.encode() if isinstance(given, str) else None)


def grpc_frame(message: bytes) -> bytes:
    """A serialized message as one gRPC length-prefixed message (not compressed), as on the wire."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


class InferenceService:
    """The six methods of ``inference.GRPCInferenceService`` KServe's and Triton's clients call."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    async def ServerLive(self, request: Any, context: aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: aio.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=self.dataplane.ready)

    async def ServerMetadata(self, request: Any, context: aio.ServicerContext) -> Any:
        return pb.ServerMetadataResponse(**self.dataplane.server_metadata())

    async def ModelReady(self, request: Any, context: aio.ServicerContext) -> Any:
        runner = self.dataplane.model(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=runner.ready)

    async def ModelMetadata(self, request: Any, context: aio.ServicerContext) -> Any:
        metadata = self.dataplane.model_metadata(request.name, request.version or None)
        message = pb.ModelMetadataResponse(
            name=metadata.name, versions=metadata.versions, platform=metadata.platform
        )
        protobuf.encode_tensor_metadata(message.inputs, metadata.inputs)
        protobuf.encode_tensor_metadata(message.outputs, metadata.outputs)
        return message

    async def ModelInfer(self, request: Any, metadata: Mapping[str, Any], request_id: str) -> Any:
        """``metadata``: the call's invocation metadata, the headers a REST inference passes on."""
        name, version = request.model_name, request.model_version or None
        self.dataplane.ready_model(name, version)
        inference = protobuf.decode_request(request)
        answer = await self.dataplane.infer(name, inference, metadata, request_id, version)
        return protobuf.encode_response(answer, raw=protobuf.is_raw(request))


# method → (request message, metrics label, the request's model name field, an inference: it has a request
# id and its payloads are logged)
METHODS: dict[str, tuple[type[Any], str, str | None, bool]] = {
    "ServerLive": (pb.ServerLiveRequest, "grpc_server_live", None, False),
    "ServerReady": (pb.ServerReadyRequest, "grpc_server_ready", None, False),
    "ServerMetadata": (pb.ServerMetadataRequest, "grpc_server_metadata", None, False),
    "ModelReady": (pb.ModelReadyRequest, "grpc_model_ready", "name", False),
    "ModelMetadata": (pb.ModelMetadataRequest, "grpc_model_metadata", "name", False),
    "ModelInfer": (pb.ModelInferRequest, "grpc_infer", "model_name", True),
}


def _unary(method: Method, message_type: type[Any], label: str, model_field: str | None, inference: bool,
           payload_logger: PayloadLogger | None = None) -> Any:
    """``method`` as a unary handler from the request's bytes to the answer's: parsing, errors, metrics,
    an inference's request id and payload events here, once for every method."""

    async def handle(data: bytes, context: aio.ServicerContext) -> bytes:
        started = time.perf_counter()
        model = None
        status = 200
        try:
            if not inference:
                request = protobuf.parse(message_type, data)
                model = getattr(request, model_field) if model_field else None
                return (await method(request, context)).SerializeToString()
            metadata = dict(context.invocation_metadata() or ())  # read once: it is built on each call
            request_id = call_request_id(metadata)
            context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
            if payload_logger is not None:  # as received, whether or not it parses (as REST's)
                payload_logger.log_request(request_id, grpc_frame(data), GRPC_CONTENT_TYPE)
            request = protobuf.parse(message_type, data)
            model = getattr(request, model_field) if model_field else None
            answer = (await method(request, metadata, request_id)).SerializeToString()
            if payload_logger is not None:
                payload_logger.log_response(request_id, grpc_frame(answer), GRPC_CONTENT_TYPE)
            return answer
        except ApiError as exc:
            status = exc.status
            await context.abort(status_code(exc.status), exc.message)
        except aio.AbortError:
            raise
        except Exception as exc:  # never let one request take the server down
            status = 500
            log.exception("unexpected error serving %s", label)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            get_observer().request_finished(
                endpoint=label, model=model, status=status, seconds=time.perf_counter() - started
            )

    return grpc.unary_unary_rpc_method_handler(handle, request_deserializer=None, response_serializer=None)


def inference_handler(service: InferenceService, payload_logger: PayloadLogger | None = None
                      ) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {method: _unary(getattr(service, method), *spec, payload_logger) for method, spec in METHODS.items()},
    )


class HealthService(AsyncHealthServicer):
    """``grpc.health.v1.Health``: the server ("") and ``inference.GRPCInferenceService`` are SERVING
    once every model is ready (what ``/v2/health/ready`` says), NOT_SERVING before and while stopping;
    ``liveness`` is SERVING whenever the server answers (what ``/v2/health/live`` says), NOT_SERVING while
    stopping. Kubernetes' probe documentation names the services of its ``grpc`` probes so."""

    def __init__(self, ready: Callable[[], bool]) -> None:
        super().__init__()
        self.ready = ready

    async def Check(self, request: Any, context: Any) -> Any:
        serving = health_pb2.HealthCheckResponse.SERVING
        status = serving if self.ready() else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", SERVICE_NAME):
            await self.set(service, status)
        await self.set(LIVENESS_SERVICE, serving)
        return await super().Check(request, context)


class GrpcServer:
    """The ``grpc.aio`` server: started and stopped by the HTTP server's lifespan, in its loop."""

    def __init__(
        self,
        dataplane: DataPlane,
        host: str,
        port: int,
        max_message_size: int,
        *,
        required: bool = True,
        payload_logger: PayloadLogger | None = None,
        reuse_port: bool = False,
    ) -> None:
        """``required``: a port that cannot be bound stops the start-up; else (the port is only the
        default, nobody asked for it) it is logged and the runtime serves HTTP alone, as a taken
        metrics port is (:func:`isvc_runtime.metrics.install`). ``payload_logger``: ModelInfer's requests
        and answers are logged to it. ``reuse_port``: the server's other processes bind the port too
        (isvc_runtime.processes); else a port in use is an error."""
        self.dataplane = dataplane
        self.required = required
        self.payload_logger = payload_logger
        self.reuse_port = reuse_port
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.max_message_size = max_message_size
        self.server: aio.Server | None = None
        self.health = HealthService(lambda: dataplane.ready)
        self.port: int | None = None

    async def start(self) -> None:
        server = aio.server(
            options=[
                ("grpc.max_receive_message_length", self.max_message_size),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", int(self.reuse_port)),
            ]
        )
        server.add_generic_rpc_handlers(
            (inference_handler(InferenceService(self.dataplane), self.payload_logger),)
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        try:
            self.port = server.add_insecure_port(self.address)
        except RuntimeError as exc:
            if self.required:
                raise RuntimeError(f"gRPC port {self.address} unavailable: {exc}") from None
            log.warning("gRPC port %s unavailable (%s); serving HTTP only", self.address, exc)
            return
        await server.start()
        self.server = server
        log.info("gRPC (inference.GRPCInferenceService, grpc.health.v1) on %s", self.address)

    async def stop(self, grace: float | None) -> None:
        if self.server is None:
            return
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        self.server = None
