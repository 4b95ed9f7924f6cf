"""The HTTP application on Starlette: the route table (:mod:`.endpoints`), the exception handlers that
turn errors into ``{"error": ...}`` answers, and the middleware: :mod:`.middleware`'s, and outside it, when
the payload logger is on, :class:`~isvc_runtime.payload_logger.middleware.PayloadLoggingMiddleware`, so
that it logs every answer as sent, the 500s the inner middleware makes of unexpected errors included."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from ..codecs.jsonio import dumps
from ..errors import ApiError, RequestTooLarge
from ..payload_logger import PayloadLogger
from ..payload_logger.middleware import PayloadLoggingMiddleware
from .middleware import RequestContextMiddleware


class JSONResponse(Response):
    """``application/json`` written by orjson (numpy arrays included)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


Endpoint = Callable[[Request], Awaitable[Response]]


class RequestHandler:
    """An endpoint ``func(request) -> response`` as a plain ASGI app. Starlette wraps a function endpoint in
    a second, per-route exception-handling layer (``request_response``); the application's
    ExceptionMiddleware already answers every error through the same handlers, so that layer is only
    cost on the hot path."""

    __slots__ = ("func",)

    def __init__(self, func: Endpoint) -> None:
        self.func = func

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.func(Request(scope, receive))
        await response(scope, receive, send)


def route(path: str, endpoint: Endpoint, methods: list[str], name: str) -> Route:
    """A route table entry: ``endpoint`` answers ``methods`` (GET includes HEAD) on ``path``."""
    return Route(path, RequestHandler(endpoint), methods=methods, name=name)


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status)


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message)


async def routing_error(request: Request, exc: Exception) -> Response:
    """Starlette's 404 (no route) and 405 (a route, not for this method), in our words."""
    assert isinstance(exc, HTTPException)
    path = request.scope["path"]
    if exc.status_code == 405:
        return error_response(405, f"method {request.method} is not allowed on {path}")
    if exc.status_code == 404:
        return error_response(404, f"no route for {path}")
    return error_response(exc.status_code, exc.detail)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (announced or streamed)."""
    content_length = request.headers.get("content-length")
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise RequestTooLarge(
            f"the request body ({content_length} bytes) is over max_request_size ({limit} bytes)"
        )
    return await _receive_body(request.receive, limit)


async def _receive_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"the request body is over max_request_size ({limit} bytes)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def build_app(
    routes: Sequence[BaseRoute],
    *,
    on_startup: Callable[[], Awaitable[None]] | None = None,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
    payload_logger: PayloadLogger | None = None,
) -> Starlette:
    """The application; at start-up ``on_startup`` runs; at shutdown ``on_shutdown`` runs, then the
    payload logger sends what it still holds (the last answers' events)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if on_startup is not None:
            await on_startup()
        yield
        try:
            if on_shutdown is not None:
                await on_shutdown()
        finally:
            if payload_logger is not None:
                await payload_logger.stop()

    middleware = [Middleware(RequestContextMiddleware)]
    if payload_logger is not None:  # outermost: the first in Starlette's list
        middleware.insert(0, Middleware(PayloadLoggingMiddleware, payload_logger=payload_logger))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={ApiError: api_error, HTTPException: routing_error},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # RequestContextMiddleware serves "/path/" as "/path"
    return app
