"""The REST binary tensor extension (Triton's ``docs/protocol/extension_binary_data.md``; KServe's Python
server reads and writes it too: ``python/kserve/kserve/protocol/rest/v2_endpoints.py`` and the helpers in
``python/kserve/kserve/utils/utils.py``).

A request with the ``Inference-Header-Content-Length: N`` header is N bytes of v2 JSON followed by the
inputs' raw bytes (:mod:`.raw`), in the order of the inputs whose ``parameters`` say ``binary_data_size``.
An output goes binary when its requested output says ``"binary_data": true``, else when the request's
parameters say ``"binary_data_output": true``; the answer is then its JSON (the binary outputs with
``binary_data_size`` and no ``data``) followed by their bytes, its length in the same header.

Pure functions over bytes; the JSON parts are :mod:`.v2`'s.
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from ..inference import InferenceRequest, InferenceResponse, Tensor
from .jsonio import dumps, loads_object
from .raw import raw_of
from .v2 import decode_request as decode_json
from .v2 import encode_tensor

HEADER = "inference-header-content-length"
CONTENT_TYPE = "application/octet-stream"
# Parameters of the extension: they say how a tensor travels, and are not echoed back as the tensor's own.
_EXTENSION_KEYS = frozenset({"binary_data", "binary_data_size", "binary_data_output"})


def decode_request(body: bytes, header_length: str | None) -> InferenceRequest:
    """A typed request from a v2 body: all JSON (``header_length`` None) or JSON then raw tensors."""
    if header_length is None:
        return decode_json(loads_object(body))
    if not header_length.isdigit() or int(header_length) > len(body):
        raise InputError(
            f"Inference-Header-Content-Length {header_length!r} must be a byte count within "
            f"the body ({len(body)} bytes)"
        )
    split = int(header_length)
    payload = loads_object(body[:split])
    tail = memoryview(body)[split:]
    offset = 0

    def raw(name: str, position: int) -> bytes | None:
        nonlocal offset
        tensor = payload["inputs"][position]
        parameters = tensor.get("parameters")
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None:
            return None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InputError(f"input {name!r}: 'binary_data_size' must be a non-negative integer")
        if "data" in tensor:
            raise InputError(f"input {name!r}: both 'data' and 'binary_data_size' given")
        if offset + size > len(tail):
            raise InputError(
                f"input {name!r}: binary_data_size {size} runs past the body's binary part "
                f"({len(tail) - offset} bytes left)"
            )
        content = bytes(tail[offset : offset + size])
        offset += size
        return content

    request = decode_json(payload, raw)
    if offset != len(tail):
        raise InputError(
            f"the body's binary part has {len(tail)} bytes, the inputs' binary_data_size add up to {offset}"
        )
    for tensor in request.inputs:
        tensor.parameters = _without_extension(tensor.parameters)
    return request


def _without_extension(parameters: dict[str, Any] | None) -> dict[str, Any] | None:
    if not parameters:
        return None
    kept = {k: v for k, v in parameters.items() if k not in _EXTENSION_KEYS}
    return kept or None


def binary_outputs(request: InferenceRequest) -> set[str] | bool:
    """The outputs to answer binary: True for every one, else their names."""
    named = {
        o.name: bool(o.parameters.get("binary_data"))
        for o in request.outputs or ()
        if o.parameters
        if "binary_data" in o.parameters
    }
    if named:
        return {name for name, binary in named.items() if binary}
    return bool((request.parameters or {}).get("binary_data_output"))


def encode_response(response: InferenceResponse, request: InferenceRequest) -> tuple[bytes, dict[str, str]]:
    """The answer's body and its extra headers: plain v2 JSON (no headers) unless an output goes binary."""
    binary = binary_outputs(request)
    body: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
    }
    parameters = _without_extension(response.parameters)
    if parameters:
        body["parameters"] = parameters
    outputs: list[dict[str, Any]] = []
    tails: list[bytes] = []
    for tensor in response.outputs:
        if binary is True or (binary and tensor.name in binary):
            content = raw_of(tensor)
            encoded = {"name": tensor.name, "shape": tensor.shape, "datatype": tensor.datatype}
            encoded["parameters"] = {
                **(_without_extension(tensor.parameters) or {}),
                "binary_data_size": len(content),
            }
            outputs.append(encoded)
            tails.append(content)
        else:
            plain = Tensor(
                tensor.name, tensor.datatype, tensor.shape, tensor.data, _without_extension(tensor.parameters)
            )
            outputs.append(encode_tensor(plain))
    body["outputs"] = outputs
    header = dumps(body)
    if not tails:
        return header, {}
    return b"".join([header, *tails]), {"Inference-Header-Content-Length": str(len(header))}
