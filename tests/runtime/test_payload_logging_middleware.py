"""The payload logger as ASGI middleware in the runtime's app (rest.app.build_app): v1 and v2 inference
requests and their answers, errors included, become paired CloudEvents whose id is the one request id of
the HTTP layer (the answer's x-request-id, the data plane's); health, metrics and GETs are not logged, and
the client's headers never reach the sink."""

from __future__ import annotations

import asyncio

import httpx
from isvc_runtime.payload_logger import REQUEST, RESPONSE, LoggerSettings, PayloadLogger
from isvc_runtime.payload_logger.middleware import PayloadLoggingMiddleware, logged
from isvc_runtime.payload_logger.settings import Identity
from isvc_runtime.rest.app import build_app
from isvc_runtime.rest.middleware import request_id
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from support.cloudevents_sink import cloudevents_sink


async def predict(request: Request) -> Response:
    instances = (await request.json())["instances"]
    if instances == ["boom"]:
        raise RuntimeError("the handler broke")
    return JSONResponse({"predictions": [sum(row) for row in instances], "id": request.state.request_id})


async def infer(request: Request) -> Response:
    body = await request.body()

    async def chunks():
        yield b'{"outputs": '
        yield body
        yield b"}"

    return StreamingResponse(chunks(), media_type="application/json")


async def ready(request: Request) -> Response:
    return JSONResponse({"ready": True})


ROUTES = [
    Route("/v1/models/{name}:predict", predict, methods=["POST"]),
    Route("/v2/models/{name}/infer", infer, methods=["POST"]),
    Route("/v2/health/ready", ready),
]


def scope(method: str, path: str) -> dict:
    return {"type": "http", "method": method, "path": path}


def test_only_the_inference_endpoints_are_logged() -> None:
    for path in ("/v1/models/mnist:predict", "/v1/models/mnist:explain", "/v2/models/mnist/infer",
                 "/v2/models/mnist/versions/2/infer", "/v2/models/mnist/explain"):
        assert logged(scope("POST", path)), path
    for method, path in (("GET", "/v1/models/mnist:predict"), ("POST", "/v2/health/ready"),
                         ("POST", "/predictions/mnist"), ("GET", "/metrics"),
                         ("POST", "/v2/models/a/b/infer")):
        assert not logged(scope(method, path)), path
    assert logged(scope("POST", "/v1/models/mnist:predict/"))  # served as without the slash
    assert not logged({"type": "lifespan"} | {"method": "POST", "path": "/v1/models/m:predict"})


def test_requests_and_answers_are_paired_events_and_the_answer_carries_their_id() -> None:
    async def scenario(url: str) -> list[httpx.Response]:
        payload_logger = PayloadLogger(LoggerSettings(url=url, identity=Identity(source="s")))
        app = build_app(ROUTES, payload_logger=payload_logger)
        assert app.user_middleware[0].cls is PayloadLoggingMiddleware  # outermost
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://runtime") as client:
            answers = [
                await client.post("/v1/models/mnist:predict", json={"instances": [[1, 2], [3, 4]]},
                                  headers={"authorization": "Bearer secret", "cookie": "session=1"}),
                await client.post("/v1/models/mnist:predict", json={"instances": [[5]]},
                                  headers={"x-request-id": "client-chosen"}),
                await client.post("/v2/models/mnist/infer", content=b'{"inputs": []}',
                                  headers={"content-type": "application/json"}),
                await client.get("/v2/health/ready"),
                await client.post("/v1/models/mnist:predict", json={"instances": ["boom"]}),
            ]
        deadline = asyncio.get_running_loop().time() + 10
        while payload_logger.sent < 8 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        await payload_logger.stop()
        return answers

    with cloudevents_sink() as sink:
        answers = asyncio.run(scenario(sink.url))
        requests, responses = sink.events(REQUEST), sink.events(RESPONSE)
        header_names = set().union(*(r.header_names for r in sink.received))
        bodies = {(r.event.get_type(), r.event.get_id()): r.body for r in sink.received}
    logged_answers = [*answers[:3], answers[4]]
    ids = [answer.headers["x-request-id"] for answer in logged_answers]
    assert ids[1] == "client-chosen" and len(ids[0]) == 32 and len(set(ids)) == 4
    assert [len(answer.headers.get_list("x-request-id")) for answer in answers] == [1] * 5
    assert sorted(e.get_id() for e in requests) == sorted(e.get_id() for e in responses) == sorted(ids)
    assert [answer.json()["id"] for answer in answers[:2]] == ids[:2]  # the data plane sees the same id
    for answer in logged_answers:
        assert bodies[(RESPONSE, answer.headers["x-request-id"])] == answer.content
    assert answers[4].status_code == 500 and b"the handler broke" in bodies[(RESPONSE, ids[3])]
    assert bodies[(REQUEST, ids[0])] == b'{"instances":[[1,2],[3,4]]}'
    assert bodies[(REQUEST, ids[2])] == b'{"inputs": []}'
    assert {e.get_datacontenttype() for e in requests + responses} == {"application/json"}
    assert requests[0].get_extension("component") == "predictor"
    assert not header_names & {"authorization", "cookie", "x-request-id"}


def test_request_id_is_the_clients_x_request_id_when_a_plain_token_else_a_new_one() -> None:
    assert request_id(b"abc-123") == "abc-123"
    for bad in (None, b"", b"a b", b"x" * 129, "caf\u00e9".encode(), b"a\x7fb"):
        generated = request_id(bad)
        assert len(generated) == 32 and generated != request_id(bad)
