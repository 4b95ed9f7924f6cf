"""The payload logger as pure ASGI middleware: the one place where v1 predict/explain and v2 infer/explain
requests and answers are seen whole, whatever route or codec serves them.

The request body is recorded as the application reads it and logged once read to its end; the answer's
body as it is sent, logged with the content type the application gave it. Both events carry the request
id (the client's ``x-request-id``, else a fresh UUID), which the answer also carries as ``x-request-id``
and the application finds in ``scope["state"]["request_id"]`` (Starlette's ``request.state.request_id``).
Nothing is awaited beyond what the application itself awaits: logging is ``PayloadLogger.log``, a
``put_nowait``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .dispatcher import PayloadLogger
from .events import REQUEST_ID_HEADER, request_id

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The inference endpoints KFServing's logger saw: v1 ``:predict``/``:explain``, v2 ``infer``/``explain``.
LOGGED_PATHS = re.compile(
    r"^/v1/models/[^/]+:(predict|explain)$|^/v2/models/[^/]+(/versions/[^/]+)?/(infer|explain)$")
_REQUEST_ID = REQUEST_ID_HEADER.encode("ascii")


def logged(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] != "POST":
        return False
    return LOGGED_PATHS.match(scope["path"]) is not None


class PayloadLoggingMiddleware:
    def __init__(self, app: ASGIApp, payload_logger: PayloadLogger) -> None:
        self.app = app
        self.payload_logger = payload_logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not logged(scope):
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1")
                   for name, value in scope["headers"]}
        event_id = request_id(headers)
        scope.setdefault("state", {})["request_id"] = event_id  # request.state.request_id for the data plane
        payload_logger = self.payload_logger
        request_body: list[bytes] = []
        answer_body: list[bytes] = []
        answer_type = ""

        async def receive_logged() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                request_body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    body = b"".join(request_body)
                    payload_logger.log_request(event_id, body, headers.get("content-type", ""))
            return message

        async def send_logged(message: Message) -> None:
            nonlocal answer_type
            if message["type"] == "http.response.start":
                answer_headers = [(n, v) for n, v in message.get("headers", ()) if n.lower() != _REQUEST_ID]
                answer_type = next(
                    (v.decode("latin-1") for n, v in answer_headers if n.lower() == b"content-type"), "")
                message["headers"] = [*answer_headers, (_REQUEST_ID, event_id.encode("latin-1"))]
            elif message["type"] == "http.response.body":
                answer_body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    payload_logger.log_response(event_id, b"".join(answer_body), answer_type)
            await send(message)

        await self.app(scope, receive_logged, send_logged)
