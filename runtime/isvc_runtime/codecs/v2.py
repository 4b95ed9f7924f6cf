"""KServe v2 (Open Inference Protocol) JSON: request bodies ↔ typed requests and responses
(:mod:`isvc_runtime.inference`). Pure functions; tensors ↔ rows is the data plane's business."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import InputError
from ..inference import (
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    Tensor,
    TensorMetadata,
    check_datatype,
    check_shape,
    tensor_from_values,
)
from .raw import tensor_from_raw

RawReader = Callable[[str, int], bytes | None]


def decode_request(payload: dict[str, Any], raw: RawReader | None = None) -> InferenceRequest:
    """A typed request from a parsed JSON body; 400 for anything malformed. ``raw(name, position)``:
    an input's raw bytes when they came outside the JSON (the binary tensor extension,
    :mod:`.binary`), else None."""
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InputError('the request must have a non-empty "inputs" list')
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InputError('"id" must be a string')
    parameters = payload.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InputError('"parameters" must be an object')
    return InferenceRequest(
        [_decode_tensor(position, t, raw) for position, t in enumerate(inputs)],
        request_id,
        parameters,
        _decode_outputs(payload.get("outputs")),
    )


def _decode_outputs(outputs: Any) -> list[RequestedOutput] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        raise InputError('"outputs" must be a list')
    requested = []
    for position, output in enumerate(outputs):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise InputError(f"outputs[{position}] must be an object with a 'name' string")
        parameters = output.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InputError(f"outputs[{position}]: 'parameters' must be an object")
        requested.append(RequestedOutput(output["name"], parameters))
    return requested or None


def _decode_tensor(position: int, tensor: Any, raw: RawReader | None) -> Tensor:
    if not isinstance(tensor, dict):
        raise InputError(f"inputs[{position}] must be an object with name, shape, datatype and data")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise InputError(f"inputs[{position}] needs a 'name' string")
    datatype = check_datatype(name, tensor.get("datatype"))
    shape = check_shape(name, tensor.get("shape"))
    parameters = tensor.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InputError(f"input {name!r}: 'parameters' must be an object")
    content = raw(name, position) if raw is not None else None
    if content is not None:
        decoded = tensor_from_raw(name, datatype, shape, content)
    else:
        data = tensor.get("data")
        if not isinstance(data, list):
            raise InputError(f"input {name!r}: 'data' must be a list")
        decoded = tensor_from_values(name, datatype, shape, data)
    if parameters:
        decoded.parameters = parameters
    return decoded


def encode_tensor(tensor: Tensor) -> dict[str, Any]:
    data = tensor.data.ravel() if isinstance(tensor.data, np.ndarray) else tensor.data
    encoded: dict[str, Any] = {
        "name": tensor.name,
        "shape": tensor.shape,
        "datatype": tensor.datatype,
        "data": data,
    }
    if tensor.parameters:
        encoded["parameters"] = tensor.parameters
    return encoded


def encode_response(response: InferenceResponse) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
        "outputs": [encode_tensor(t) for t in response.outputs],
    }
    if response.parameters:
        body["parameters"] = response.parameters
    return body


def encode_metadata(tensors: list[TensorMetadata] | None) -> list[dict[str, Any]]:
    """Tensor metadata as the model metadata response lists it; unknown tensors list nothing."""
    return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in tensors or ()]
