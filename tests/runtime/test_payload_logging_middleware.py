"""The payload logger as ASGI middleware: v1 and v2 inference requests and their answers become paired
CloudEvents whose id is the answer's x-request-id; health, metrics and GETs are not logged, and the
client's headers never reach the sink."""

from __future__ import annotations

import asyncio

import httpx
from isvc_runtime.payload_logger import REQUEST, RESPONSE, LoggerSettings, PayloadLogger
from isvc_runtime.payload_logger.middleware import PayloadLoggingMiddleware, logged
from isvc_runtime.payload_logger.settings import Identity
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from support.cloudevents_sink import cloudevents_sink


async def predict(request: Request) -> Response:
    instances = (await request.json())["instances"]
    return JSONResponse({"predictions": [sum(row) for row in instances], "id": request.state.request_id},
                        headers={"x-request-id": "app's"})


async def infer(request: Request) -> Response:
    body = await request.body()

    async def chunks():
        yield b'{"outputs": '
        yield body
        yield b"}"

    return StreamingResponse(chunks(), media_type="application/json")


async def ready(request: Request) -> Response:
    return JSONResponse({"ready": True})


APP = Starlette(routes=[
    Route("/v1/models/{name}:predict", predict, methods=["POST"]),
    Route("/v2/models/{name}/infer", infer, methods=["POST"]),
    Route("/v2/health/ready", ready),
])


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
    assert not logged({"type": "lifespan"} | {"method": "POST", "path": "/v1/models/m:predict"})


def test_requests_and_answers_are_paired_events_and_the_answer_carries_their_id() -> None:
    async def scenario(url: str) -> list[httpx.Response]:
        payload_logger = PayloadLogger(LoggerSettings(url=url, identity=Identity(source="s")))
        transport = httpx.ASGITransport(app=PayloadLoggingMiddleware(APP, payload_logger))
        async with httpx.AsyncClient(transport=transport, base_url="http://runtime") as client:
            answers = [
                await client.post("/v1/models/mnist:predict", json={"instances": [[1, 2], [3, 4]]},
                                  headers={"authorization": "Bearer secret", "cookie": "session=1"}),
                await client.post("/v1/models/mnist:predict", json={"instances": [[5]]},
                                  headers={"x-request-id": "client-chosen"}),
                await client.post("/v2/models/mnist/infer", content=b'{"inputs": []}',
                                  headers={"content-type": "application/json"}),
                await client.get("/v2/health/ready"),
            ]
        deadline = asyncio.get_running_loop().time() + 10
        while payload_logger.sent < 6 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        await payload_logger.stop()
        return answers

    with cloudevents_sink() as sink:
        answers = asyncio.run(scenario(sink.url))
        requests, responses = sink.events(REQUEST), sink.events(RESPONSE)
        header_names = set().union(*(r.header_names for r in sink.received))
        bodies = {(r.event.get_type(), r.event.get_id()): r.body for r in sink.received}
    ids = [answer.headers.get("x-request-id") for answer in answers[:3]]
    assert ids[1] == "client-chosen" and len(ids[0]) == 36 and len(ids[2]) == 36
    assert answers[3].headers.get("x-request-id") is None
    assert sorted(e.get_id() for e in requests) == sorted(e.get_id() for e in responses) == sorted(ids)
    assert [answer.json()["id"] for answer in answers[:2]] == ids[:2]  # the data plane sees the same id
    for answer in answers[:3]:
        assert bodies[(RESPONSE, answer.headers["x-request-id"])] == answer.content
    assert bodies[(REQUEST, ids[0])] == b'{"instances":[[1,2],[3,4]]}'
    assert bodies[(REQUEST, ids[2])] == b'{"inputs": []}'
    assert {e.get_datacontenttype() for e in requests + responses} == {"application/json"}
    assert requests[0].get_extension("component") == "predictor"
    assert not header_names & {"authorization", "cookie", "x-request-id"}
