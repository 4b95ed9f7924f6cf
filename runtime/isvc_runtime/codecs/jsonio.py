"""Fast JSON in and out (orjson), tolerant of the numpy and torch values handlers return."""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import InputError

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _default(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if callable(tolist):  # torch tensors, numpy scalars
        return tolist()
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, set | tuple | frozenset):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default, option=_OPTIONS)


def loads_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400."""
    if not body:
        raise InputError("the request body is empty; expected a JSON object")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InputError(f"the request body must be a JSON object, not {type(value).__name__}")
    return value
