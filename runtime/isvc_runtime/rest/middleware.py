"""Pure ASGI middleware (Starlette's BaseHTTPMiddleware costs a task and a stream per request).

:class:`RequestContextMiddleware`, around the routes: serves ``/path/`` as ``/path``; gives every
request its one id (:func:`request_id`), kept in ``scope["state"]`` for the endpoints, the data plane and
the payload logger (``ce-id``), and sent back in ``x-request-id``; answers an unexpected exception with a 500
``{"error": ...}`` instead of a traceback; and reports each answered request to the observer (metrics),
labelled with its route's name (``unknown`` when no route took it).
"""

from __future__ import annotations

import itertools
import logging
import os
import time

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..codecs.jsonio import dumps
from ..observe import get_observer

log = logging.getLogger("isvc_runtime.rest")

REQUEST_ID_HEADER = b"x-request-id"
_MAX_REQUEST_ID = 128
# Generated ids: 32 hex digits, a random per-process prefix and a counter (uuid4 costs a system call
# and a UUID object per request).
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count()


def request_id(given: bytes | None) -> str:
    """The client's ``x-request-id`` when it is a plain token (printable ASCII, no space, at most 128
    characters: a safe ``ce-id`` and log field), else a new id."""
    if given and len(given) <= _MAX_REQUEST_ID and given.isascii():
        value = given.decode("ascii")
        if value.isprintable() and " " not in value:
            return value
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def request_id_of(scope: Scope) -> str:
    """The id :class:`RequestContextMiddleware` gave this request."""
    return scope["state"]["request_id"]


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            scope["path"] = path.rstrip("/") or "/"
        given = next((v for k, v in scope["headers"] if k == REQUEST_ID_HEADER), None)
        the_id = request_id(given)
        scope.setdefault("state", {})["request_id"] = the_id
        id_header = (REQUEST_ID_HEADER, the_id.encode("ascii"))
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            return
        except Exception as exc:  # never let one request take the server down
            log.exception("unexpected error serving %s %s", scope["method"], scope["path"])
            if status:
                raise  # the answer had started: nothing better to send
            body = dumps({"error": f"internal error: {type(exc).__name__}: {exc}"})
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
        route = scope.get("route")
        if route is None or status == 405:  # no route took it: not a model's request
            label, model = "unknown", None
        else:
            label, model = route.name, scope["path_params"].get("model")
        get_observer().request_finished(
            endpoint=label, model=model, status=status, seconds=time.perf_counter() - started
        )
