"""KServe v1: ``{"instances": [...]}`` → rows; answers → ``{"predictions": [...]}``."""

from __future__ import annotations

from typing import Any

from ..errors import InputError


def decode_request(payload: dict[str, Any]) -> list[Any]:
    """Each instance is a handler row; instances that are not objects become ``{"data": instance}``
    (TorchServe's handlers read ``row["data"]``)."""
    instances = payload.get("instances")
    if instances is None:
        if "inputs" in payload and isinstance(payload["inputs"], list):
            instances = payload["inputs"]  # KServe v1 also accepts "inputs"
        else:
            raise InputError('the request must have an "instances" list')
    if not isinstance(instances, list):
        raise InputError(f'"instances" must be a list, not {type(instances).__name__}')
    if not instances:
        raise InputError('"instances" is empty')
    return [row if isinstance(row, dict) else {"data": row} for row in instances]


def encode_response(answers: list[Any]) -> dict[str, Any]:
    return {"predictions": answers}
