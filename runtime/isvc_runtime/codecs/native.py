"""TorchServe's native ``POST /predictions/{model}``: the raw body is one row; the answer goes back as
it is (bytes/str raw, anything else JSON)."""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import InputError
from .jsonio import dumps


def decode_request(body: bytes, content_type: str) -> list[dict[str, Any]]:
    if not body:
        raise InputError("the request body is empty")
    if content_type.startswith("application/json"):
        try:
            return [{"body": orjson.loads(body)}]
        except orjson.JSONDecodeError as exc:
            raise InputError(f"the request body is not valid JSON: {exc}") from None
    return [{"body": body}]


def encode_response(answer: Any) -> tuple[bytes, str]:
    if isinstance(answer, bytes | bytearray):
        return bytes(answer), "application/octet-stream"
    if isinstance(answer, str):
        return answer.encode(), "text/plain; charset=utf-8"
    return dumps(answer), "application/json"
