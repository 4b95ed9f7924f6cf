"""The REST endpoints: KServe v1, KServe v2 (JSON), TorchServe's native ``/predictions`` and ``/ping``,
and the route table that maps methods and paths to them.

Each endpoint decodes its protocol (:mod:`isvc_runtime.codecs`), asks the data plane, and encodes the
answer; errors are raised as :class:`~isvc_runtime.errors.ApiError` and answered by the app's exception
handlers. Route names are the endpoint labels of the metrics (``v1_predict``, ``v2_infer``, ...).
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..codecs import binary, native, v1, v2
from ..codecs.jsonio import loads_object
from ..dataplane import DataPlane
from ..protocol import DEFAULT as DEFAULT_PROTOCOL
from ..protocol import liveness_body
from .app import Endpoint, JSONResponse, read_body, route
from .middleware import request_id_of


class ModelName(Convertor[str]):
    """A model name in a v1 status path: no ``:`` (``/v1/models/m:predict`` is an action)."""

    regex = "[^/:]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("model_name", ModelName())


class Endpoints:
    """The endpoints over one data plane; ``max_request_size`` bounds every request body; ``protocol``
    (``PROTOCOL_VERSION``, :mod:`isvc_runtime.protocol`) is the one ``GET /`` answers in."""

    def __init__(self, dataplane: DataPlane, max_request_size: int, protocol: str = DEFAULT_PROTOCOL) -> None:
        self.dataplane = dataplane
        self.max_request_size = max_request_size
        self.live_body = liveness_body(protocol)

    async def body(self, request: Request) -> bytes:
        return await read_body(request, self.max_request_size)

    # --- KServe v1 ---

    async def server_live(self, request: Request) -> Response:
        """``GET /``: KServe's v1 liveness (its SDK's ``is_server_ready`` for v1 asks here), in the declared
        protocol's words (v2, grpc-v2: the Open Inference Protocol's ``{"live": true}``)."""
        return JSONResponse(self.live_body)

    async def v1_list_models(self, request: Request) -> Response:
        return JSONResponse({"models": self.dataplane.model_names()})

    async def v1_model_status(self, request: Request) -> Response:
        name = request.path_params["model"]
        runner = self.dataplane.model(name)
        if runner.ready:
            return JSONResponse({"name": name, "ready": True})
        return JSONResponse(
            {"name": name, "ready": False, "error": self.dataplane.not_ready_reason_of(runner)}, 503
        )

    async def v1_predict(self, request: Request) -> Response:
        name = request.path_params["model"]
        self.dataplane.ready_model(name)
        rows = v1.decode_request(loads_object(await self.body(request)))
        answers = await self.dataplane.predict(name, rows, request.headers, request_id_of(request.scope))
        return JSONResponse(v1.encode_response(answers))

    # --- KServe v2 ---

    async def v2_server_metadata(self, request: Request) -> Response:
        return JSONResponse(self.dataplane.server_metadata())

    async def v2_live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def v2_ready(self, request: Request) -> Response:
        if self.dataplane.ready:
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, "error": self.dataplane.not_ready_reason()}, 503)

    async def v2_model_ready(self, request: Request) -> Response:
        name = request.path_params["model"]
        runner = self.dataplane.model(name, request.path_params.get("version"))
        if runner.ready:
            return JSONResponse({"name": name, "ready": True})
        return JSONResponse(
            {"name": name, "ready": False, "error": self.dataplane.not_ready_reason_of(runner)}, 503
        )

    async def v2_model_metadata(self, request: Request) -> Response:
        metadata = self.dataplane.model_metadata(
            request.path_params["model"], request.path_params.get("version")
        )
        return JSONResponse(
            {
                "name": metadata.name,
                "versions": metadata.versions,
                "platform": metadata.platform,
                "inputs": v2.encode_metadata(metadata.inputs),
                "outputs": v2.encode_metadata(metadata.outputs),
                "ready": metadata.ready,
            }
        )

    async def v2_infer(self, request: Request) -> Response:
        name, version = request.path_params["model"], request.path_params.get("version")
        self.dataplane.ready_model(name, version)
        inference = binary.decode_request(await self.body(request), request.headers.get(binary.HEADER))
        answer = await self.dataplane.infer(
            name, inference, request.headers, request_id_of(request.scope), version
        )
        body, headers = binary.encode_response(answer, inference)
        media_type = binary.CONTENT_TYPE if headers else JSONResponse.media_type
        return Response(body, headers=headers, media_type=media_type)

    # --- TorchServe ---

    async def native_predict(self, request: Request) -> Response:
        name, version = request.path_params["model"], request.path_params.get("version")
        self.dataplane.ready_model(name, version)
        rows = native.decode_request(await self.body(request), request.headers.get("content-type", ""))
        answers = await self.dataplane.predict(
            name, rows, request.headers, request_id_of(request.scope), version
        )
        body, content_type = native.encode_response(answers[0])
        return Response(body, media_type=content_type)

    async def ping(self, request: Request) -> Response:
        if self.dataplane.ready:
            return JSONResponse({"status": "Healthy"})
        return JSONResponse({"status": "Unhealthy", "error": self.dataplane.not_ready_reason()}, 503)


def model_routes(prefix: str, suffix: str, endpoint: Endpoint, methods: list[str], name: str) -> list[Route]:
    """A v2 model route with and without ``/versions/{version}``."""
    return [
        route(f"{prefix}{suffix}", endpoint, methods, name),
        route(f"{prefix}/versions/{{version}}{suffix}", endpoint, methods, name),
    ]


def routes(
    endpoints: Endpoints,
    *,
    v1_actions: dict[str, Endpoint],
    v2_actions: dict[str, Endpoint],
    get_routes: dict[str, Endpoint],
) -> list[BaseRoute]:
    """The route table. ``v1_actions``: ``POST /v1/models/{model}:{action}`` beside ``predict``;
    ``v2_actions``: ``POST /v2/models/{model}/{action}`` beside ``infer`` (``explain`` for both);
    ``get_routes``: further GET paths (``/metrics``), named by their path."""
    e = endpoints
    get, post = ["GET"], ["POST"]
    v2_model = "/v2/models/{model}"
    table: list[BaseRoute] = [
        route("/", e.server_live, get, "health"),
        route("/v1/models", e.v1_list_models, get, "v1_models"),
        *(
            route(f"/v1/models/{{model}}:{action}", endpoint, post, f"v1_{action}")
            for action, endpoint in {"predict": e.v1_predict, **v1_actions}.items()
        ),
        route("/v1/models/{model:model_name}", e.v1_model_status, get, "v1_model"),
        route("/v2", e.v2_server_metadata, get, "v2_server"),
        route("/v2/health/live", e.v2_live, get, "health"),
        route("/v2/health/ready", e.v2_ready, get, "health"),
        *model_routes(v2_model, "", e.v2_model_metadata, get, "v2_model"),
        *model_routes(v2_model, "/ready", e.v2_model_ready, get, "v2_model_ready"),
        *model_routes(v2_model, "/infer", e.v2_infer, post, "v2_infer"),
        *(
            route
            for action, endpoint in v2_actions.items()
            for route in model_routes(v2_model, f"/{action}", endpoint, post, f"v2_{action}")
        ),
        route("/predictions/{model}", e.native_predict, ["POST", "PUT"], "predictions"),
        route("/predictions/{model}/{version}", e.native_predict, ["POST", "PUT"], "predictions"),
        route("/ping", e.ping, get, "health"),
        *(route(path, endpoint, get, path.strip("/")) for path, endpoint in get_routes.items()),
    ]
    return table
