"""The ASGI application: routing, body limits, request ids, JSON errors. Endpoints live in
:mod:`isvc_runtime.rest.endpoints`; this module only moves bytes.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..codecs.jsonio import dumps
from ..errors import ApiError, RequestTooLarge
from ..observe import get_observer
from ..registry import ModelRegistry

log = logging.getLogger("isvc_runtime.rest")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ClientDisconnected(Exception):
    pass


@dataclass(slots=True)
class Request:
    """What an endpoint sees: method, path parameters, lower-cased headers, the body (read on demand)."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    request_id: str
    registry: ModelRegistry
    receive: Receive
    max_body: int
    _body: bytes | None = None

    async def body(self) -> bytes:
        if self._body is None:
            self._body = await read_body(self.receive, self.max_body, self.headers.get("content-length"))
        return self._body


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


def json_response(value: Any, status: int = 200) -> Response:
    return Response(status, dumps(value))


def error_response(status: int, message: str) -> Response:
    return Response(status, dumps({"error": message}))


Endpoint = Callable[[Request], Awaitable[Response]]


async def read_body(receive: Receive, limit: int, content_length: str | None) -> bytes:
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise RequestTooLarge(
            f"the request body ({content_length} bytes) is over max_request_size ({limit} bytes)"
        )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"the request body is over max_request_size ({limit} bytes)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


Route = tuple[Endpoint, dict[str, str], str]


class RuntimeApp:
    """``router(method, path)`` returns ``(endpoint, params, label)`` or raises ApiError (404/405)."""

    def __init__(
        self,
        registry: ModelRegistry,
        router: Callable[[str, str], Route],
        *,
        max_request_size: int,
        on_startup: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.registry = registry
        self.router = router
        self.max_request_size = max_request_size
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self.on_startup is not None:
                        await self.on_startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.on_shutdown is not None:
                    await self.on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id") or uuid.uuid4().hex
        label, model = "unknown", None
        try:
            endpoint, params, label = self.router(scope["method"], scope["path"])
            model = params.get("model")
            request = Request(
                scope["method"],
                scope["path"],
                params,
                headers,
                request_id,
                self.registry,
                receive,
                self.max_request_size,
            )
            response = await endpoint(request)
        except ApiError as exc:
            response = error_response(exc.status, exc.message)
        except ClientDisconnected:
            return
        except Exception as exc:  # never let one request take the server down
            log.exception("unexpected error serving %s %s", scope["method"], scope["path"])
            response = error_response(500, f"internal error: {type(exc).__name__}: {exc}")
        raw_headers = [
            (b"content-type", response.content_type.encode()),
            (b"content-length", str(len(response.body)).encode()),
            (b"x-request-id", request_id.encode("latin-1")),
        ]
        raw_headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items())
        await send({"type": "http.response.start", "status": response.status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": response.body})
        get_observer().request_finished(
            endpoint=label, model=model, status=response.status, seconds=time.perf_counter() - started
        )
