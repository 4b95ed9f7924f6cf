"""What an event is on the wire (CloudEvents 1.0, HTTP binary mode): pure functions, no I/O.

The body is the request or answer exactly as received or sent, with its own content type; every
attribute is a ``ce-`` header. Nothing of the inference request's headers is carried over (no
Authorization, no cookies): an event's head is built from the settings and the request id only.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from urllib.parse import SplitResult, quote, urlsplit

from .settings import Identity

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"
SPEC_VERSION = "1.0"
# CloudEvents HTTP binding 1.0, 3.1.3.2: printable ASCII but space, '"' and '%' stands as is in a ce-
# header value; anything else (control characters included) is percent-encoded UTF-8.
_CE_SAFE = "".join(c for c in map(chr, range(0x21, 0x7F)) if c not in ' "%')


def wants(mode: str, event_type: str) -> bool:
    """Whether a logger in ``mode`` (all, request, response) sends events of ``event_type``."""
    return mode == "all" or (event_type == REQUEST) == (mode == "request")


def target(url: str) -> tuple[SplitResult, str]:
    """The sink's parsed URL and the request target (path and query) to POST to."""
    parts = urlsplit(url)
    path = parts.path or "/"
    return parts, f"{path}?{parts.query}" if parts.query else path


def event_head(
    url: str, event_type: str, event_id: str, identity: Identity, content_type: str, length: int,
    time: datetime | None = None,
) -> bytes:
    """The HTTP/1.1 request head that POSTs one event of ``length`` body bytes to ``url``."""
    when = (time or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    lines = [
        _fixed_head(url, event_type, identity),
        f"content-type: {_plain(content_type) or 'application/octet-stream'}",
        f"content-length: {length}",
        f"ce-id: {quote(event_id, safe=_CE_SAFE)}",
        f"ce-time: {when}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


@functools.lru_cache(maxsize=16)
def _fixed_head(url: str, event_type: str, identity: Identity) -> str:
    """The head's lines that are the same for every event of one type to one sink (computed once)."""
    parts, path = target(url)
    attributes = {
        "ce-specversion": SPEC_VERSION,
        "ce-type": event_type,
        "ce-source": identity.source,
        "ce-inferenceservicename": identity.inference_service,
        "ce-namespace": identity.namespace,
        "ce-component": identity.component,
        "ce-endpoint": identity.endpoint,
    }
    return "\r\n".join([
        f"POST {path} HTTP/1.1",
        f"host: {parts.netloc}",
        *(f"{name}: {quote(value, safe=_CE_SAFE)}" for name, value in attributes.items()),
    ])


def _plain(value: str) -> str:
    """A header value that cannot end the header or start another one: printable ASCII only."""
    return "".join(ch for ch in value if ch.isascii() and ch.isprintable())
