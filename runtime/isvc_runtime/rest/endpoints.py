"""The endpoints: KServe v1, KServe v2, TorchServe's native ``/predictions`` and ``/ping``, and the
router that maps a method and path to them."""

from __future__ import annotations

from collections.abc import Mapping

from .. import __version__
from ..codecs import native, v1, v2
from ..codecs.jsonio import loads_object
from ..errors import ApiError
from .app import Endpoint, Request, Response, Route, json_response

V1Action = Endpoint  # POST /v1/models/{model}:{action}; params: model, action


def _runner(request: Request):
    """The runner named by the path; a version in the path must be the model's."""
    runner = request.registry.get(request.params["model"])
    version = request.params.get("version")
    if version is not None and version != runner.version:
        raise ApiError(
            f"model {request.params['model']} has no version {version!r} (it is {runner.version})", 404
        )
    return runner


async def v1_list_models(request: Request) -> Response:
    return json_response({"models": request.registry.names()})


async def v1_model_status(request: Request) -> Response:
    runner = request.registry.get(request.params["model"])
    body: dict[str, object] = {"name": request.params["model"], "ready": runner.ready}
    if not runner.ready:
        body["error"] = runner.error or f"model {runner.name} is still loading"
    return json_response(body, 200 if runner.ready else 503)


async def v1_predict(request: Request) -> Response:
    runner = request.registry.get(request.params["model"])
    runner.check_ready()
    rows = v1.decode_request(loads_object(await request.body()))
    answers = await runner.predict(rows, request.headers, request.request_id)
    return json_response(v1.encode_response(answers))


async def v2_server_metadata(request: Request) -> Response:
    return json_response({"name": "torch-isvc", "version": __version__, "extensions": []})


async def v2_live(request: Request) -> Response:
    return json_response({"live": True})


async def v2_ready(request: Request) -> Response:
    registry = request.registry
    if registry.ready:
        return json_response({"ready": True})
    return json_response({"ready": False, "error": "; ".join(registry.not_ready_reasons())}, 503)


async def v2_model_ready(request: Request) -> Response:
    runner = _runner(request)
    if runner.ready:
        return json_response({"name": request.params["model"], "ready": True})
    reason = runner.error or f"model {runner.name} is still loading"
    return json_response({"name": request.params["model"], "ready": False, "error": reason}, 503)


async def v2_model_metadata(request: Request) -> Response:
    runner = _runner(request)
    handler = runner.handler
    # What the model was last called with, else what its handler declares.
    inputs = runner.observed_inputs or getattr(handler, "input_metadata", None) or []
    outputs = runner.observed_outputs or getattr(handler, "output_metadata", None) or []
    return json_response(
        {
            "name": request.params["model"],
            "versions": [runner.version],
            "platform": runner.platform,
            "inputs": inputs,
            "outputs": outputs,
            "ready": runner.ready,
        }
    )


async def v2_infer(request: Request) -> Response:
    runner = _runner(request)
    runner.check_ready()
    payload = loads_object(await request.body())
    rows, inputs = v2.decode_request(payload)
    request_id = payload.get("id") or request.request_id
    answers = await runner.predict(rows, request.headers, request.request_id)
    body = v2.encode_response(
        answers,
        model_name=request.params["model"],
        model_version=runner.version,
        request_id=request_id,
        parameters=payload.get("parameters"),
    )
    runner.observed_inputs = inputs
    runner.observed_outputs = [
        {"name": o["name"], "datatype": o["datatype"], "shape": [-1, *o["shape"][1:]]}
        for o in body["outputs"]
    ]
    return json_response(body)


async def native_predict(request: Request) -> Response:
    runner = _runner(request)
    runner.check_ready()
    rows = native.decode_request(await request.body(), request.headers.get("content-type", ""))
    answers = await runner.predict(rows, request.headers, request.request_id)
    body, content_type = native.encode_response(answers[0])
    return Response(200, body, content_type)


async def ping(request: Request) -> Response:
    if request.registry.ready:
        return json_response({"status": "Healthy"})
    return json_response(
        {"status": "Unhealthy", "error": "; ".join(request.registry.not_ready_reasons())}, 503
    )


def make_router(
    v1_actions: Mapping[str, V1Action],
    get_routes: Mapping[str, Endpoint] | None = None,
    *,
    v2_actions: Mapping[str, Endpoint] | None = None,
):
    """A router over the fixed paths; ``v1_actions`` maps ``predict`` (and ``explain`` when an
    explainer is installed) to their endpoints; ``get_routes`` adds GET-only paths (``/metrics``),
    tried last, labelled with their path."""
    extra = dict(get_routes or {})

    def not_found(path: str) -> ApiError:
        return ApiError(f"no route for {path}", 404)

    def method_not_allowed(method: str, path: str) -> ApiError:
        return ApiError(f"method {method} is not allowed on {path}", 405)

    def route(method: str, path: str) -> Route:
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
        parts = path.split("/")[1:]
        head = parts[0] if parts else ""
        is_get = method in ("GET", "HEAD")
        if head == "v1" and len(parts) >= 2 and parts[1] == "models":
            if len(parts) == 2:
                if is_get:
                    return v1_list_models, {}, "v1_models"
                raise method_not_allowed(method, path)
            if len(parts) != 3:
                raise not_found(path)
            name, colon, action = parts[2].rpartition(":")
            if colon and method == "POST":
                endpoint = v1_actions.get(action)
                if endpoint is None:
                    raise not_found(path)
                return endpoint, {"model": name, "action": action}, f"v1_{action}"
            if not colon and is_get:
                return v1_model_status, {"model": parts[2]}, "v1_model"
            raise method_not_allowed(method, path)
        if head == "v2":
            rest = parts[1:]
            if not rest:
                return _get_only(method, path, v2_server_metadata, {}, "v2_server")
            if rest == ["health", "live"]:
                return _get_only(method, path, v2_live, {}, "health")
            if rest == ["health", "ready"]:
                return _get_only(method, path, v2_ready, {}, "health")
            if rest[0] == "models" and len(rest) >= 2:
                params = {"model": rest[1]}
                tail = rest[2:]
                if len(tail) >= 2 and tail[0] == "versions":
                    params["version"] = tail[1]
                    tail = tail[2:]
                if not tail:
                    return _get_only(method, path, v2_model_metadata, params, "v2_model")
                if tail == ["ready"]:
                    return _get_only(method, path, v2_model_ready, params, "v2_model_ready")
                if tail == ["infer"]:
                    if method != "POST":
                        raise method_not_allowed(method, path)
                    return v2_infer, params, "v2_infer"
                if len(tail) == 1 and tail[0] in (v2_actions or {}):  # POST /v2/models/{m}/explain
                    if method != "POST":
                        raise method_not_allowed(method, path)
                    return (v2_actions or {})[tail[0]], params, f"v2_{tail[0]}"
            raise not_found(path)
        if head == "predictions" and len(parts) in (2, 3):
            if method not in ("POST", "PUT"):
                raise method_not_allowed(method, path)
            params = {"model": parts[1]}
            if len(parts) == 3:
                params["version"] = parts[2]
            return native_predict, params, "predictions"
        if path == "/ping":
            return _get_only(method, path, ping, {}, "health")
        if path in extra:
            return _get_only(method, path, extra[path], {}, path.strip("/"))
        raise not_found(path)

    def _get_only(method: str, path: str, endpoint: Endpoint, params: dict[str, str], label: str) -> Route:
        if method not in ("GET", "HEAD"):
            raise method_not_allowed(method, path)
        return endpoint, params, label

    return route
