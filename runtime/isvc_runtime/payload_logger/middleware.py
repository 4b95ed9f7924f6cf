"""The payload logger as pure ASGI middleware: the one place where v1 predict/explain and v2 infer/explain
requests and answers are seen whole, whatever route or codec serves them.

It goes outside the HTTP layer's :class:`~isvc_runtime.rest.middleware.RequestContextMiddleware` (see
``rest.app.build_app``), so it sees every answer as sent, the 500 that middleware makes of an unexpected
error included. That middleware gives each request its one id (``scope["state"]["request_id"]``, the
answer's ``x-request-id``, the data plane's id); both events carry it as ``ce-id``. The request body is
recorded as the application reads it and logged once read to its end; the answer's body as it is sent,
logged with the content type the application gave it. Nothing is awaited beyond what the application itself
awaits: logging is ``PayloadLogger.log``, a ``put_nowait``; while the queue is full (a failing sink), an
inference is not recorded at all and its events count as dropped.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from .dispatcher import PayloadLogger

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The inference endpoints KFServing's logger saw: v1 ``:predict``/``:explain``, v2 ``infer``/``explain``.
LOGGED_PATHS = re.compile(
    r"^/v1/models/[^/]+:(predict|explain)$|^/v2/models/[^/]+(/versions/[^/]+)?/(infer|explain)$")


def content_type(headers: Iterable[tuple[bytes, bytes]]) -> str:
    return next((value.decode("latin-1") for name, value in headers if name.lower() == b"content-type"), "")


def logged(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] != "POST":
        return False
    return LOGGED_PATHS.match(scope["path"].rstrip("/")) is not None  # "/x/" is served as "/x"


class PayloadLoggingMiddleware:
    def __init__(self, app: ASGIApp, payload_logger: PayloadLogger) -> None:
        self.app = app
        self.payload_logger = payload_logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not logged(scope):
            await self.app(scope, receive, send)
            return
        payload_logger = self.payload_logger
        if payload_logger.saturated():
            payload_logger.drop_unrecorded()
            await self.app(scope, receive, send)
            return
        request_type = content_type(scope["headers"])
        request_body: list[bytes] = []
        answer_body: list[bytes] = []
        answer_type = ""

        async def receive_logged() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                request_body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    event_id = scope["state"]["request_id"]
                    payload_logger.log_request(event_id, b"".join(request_body), request_type)
            return message

        async def send_logged(message: Message) -> None:
            nonlocal answer_type
            if message["type"] == "http.response.start":
                answer_type = content_type(message.get("headers", ()))
            elif message["type"] == "http.response.body":
                answer_body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    event_id = scope["state"]["request_id"]
                    payload_logger.log_response(event_id, b"".join(answer_body), answer_type)
            await send(message)

        await self.app(scope, receive_logged, send_logged)
