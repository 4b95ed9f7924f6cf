"""Open Inference Protocol protobuf messages (``inference.GRPCInferenceService``) ↔ typed requests and
responses (:mod:`isvc_runtime.inference`). Pure functions: no server, no data plane.

A tensor travels in ``contents`` (one repeated field per datatype family) or, for every input at once,
in ``raw_input_contents`` (:mod:`.raw`); an answer to a raw request is raw too (``raw_output_contents``),
as KServe's server and Triton answer (KServe ``python/kserve/kserve/protocol/infer_type.py``,
``InferResponse.to_grpc``). FP16 has no ``contents`` field: it travels raw only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from ..errors import InputError
from ..grpc.stubs import pb
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
from .raw import raw_of, tensor_from_raw

# The ``InferTensorContents`` field each datatype's elements travel in.
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parse(message_type: type[Any], data: bytes) -> Any:
    """A message from its wire bytes; 400 (INVALID_ARGUMENT) when they are not one."""
    try:
        return message_type.FromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise InputError(
            f"the request is not a valid {message_type.DESCRIPTOR.name} message: {exc}"
        ) from None


def decode_parameters(parameters: Mapping[str, Any]) -> dict[str, Any] | None:
    """``map<string, InferParameter>`` as plain values; None when empty."""
    decoded = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        decoded[key] = None if choice is None else getattr(parameter, choice)
    return decoded or None


def encode_parameters(target: Any, parameters: Mapping[str, Any] | None) -> None:
    """Plain values into a ``map<string, InferParameter>``; other values travel as JSON-ish text."""
    for key, value in (parameters or {}).items():
        parameter = target[key]
        if isinstance(value, bool):
            parameter.bool_param = value
        elif isinstance(value, int) and -(2**63) <= value < 2**63:
            parameter.int64_param = value
        elif isinstance(value, int) and 0 <= value < 2**64:
            parameter.uint64_param = value
        elif isinstance(value, float):
            parameter.double_param = value
        else:
            parameter.string_param = value if isinstance(value, str) else str(value)


def is_raw(message: Any) -> bool:
    """Whether a ``ModelInferRequest`` came raw (and its answer goes raw)."""
    return bool(message.raw_input_contents)


def decode_request(message: Any) -> InferenceRequest:
    """A typed request from a ``ModelInferRequest``; 400 for anything malformed."""
    if not message.inputs:
        raise InputError('the request must have a non-empty "inputs" list')
    raw = list(message.raw_input_contents)
    if raw and len(raw) != len(message.inputs):
        raise InputError(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs (one per input)"
        )
    inputs = [
        _decode_tensor(position, t, raw[position] if raw else None)
        for position, t in enumerate(message.inputs)
    ]
    outputs = [RequestedOutput(o.name, decode_parameters(o.parameters)) for o in message.outputs]
    return InferenceRequest(
        inputs,
        message.id or None,
        decode_parameters(message.parameters),
        outputs=outputs or None,
    )


def _decode_tensor(position: int, tensor: Any, raw: bytes | None) -> Tensor:
    name = tensor.name
    if not name:
        raise InputError(f"inputs[{position}] needs a 'name' string")
    datatype = check_datatype(name, tensor.datatype)
    shape = check_shape(name, [int(d) for d in tensor.shape])
    if raw is not None:
        if tensor.HasField("contents") and tensor.contents.ByteSize():
            raise InputError(f"input {name!r}: both contents and raw_input_contents given")
        decoded = tensor_from_raw(name, datatype, shape, raw)
    else:
        field = CONTENTS_FIELD.get(datatype)
        if field is None:
            raise InputError(
                f"input {name!r}: {datatype} travels in raw_input_contents only (no contents field)"
            )
        _check_one_field(name, tensor.contents, field)
        decoded = tensor_from_values(name, datatype, shape, list(getattr(tensor.contents, field)))
    decoded.parameters = decode_parameters(tensor.parameters)
    return decoded


def _check_one_field(name: str, contents: Any, field: str) -> None:
    for descriptor, _ in contents.ListFields():
        if descriptor.name != field:
            raise InputError(f"input {name!r}: its datatype's elements go in {field}, not {descriptor.name}")


def encode_response(response: InferenceResponse, *, raw: bool) -> Any:
    """A ``ModelInferResponse``: ``raw`` answers in ``raw_output_contents``, else in ``contents`` (raw
    all the same when an output's datatype has no contents field: the raw list holds every output or none)."""
    raw = raw or any(t.datatype not in CONTENTS_FIELD for t in response.outputs)
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    encode_parameters(message.parameters, response.parameters)
    for tensor in response.outputs:
        output = message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        encode_parameters(output.parameters, tensor.parameters)
        if raw:
            message.raw_output_contents.append(raw_of(tensor))
        else:
            _fill_contents(output.contents, tensor)
    return message


def _fill_contents(contents: Any, tensor: Tensor) -> None:
    values = getattr(contents, CONTENTS_FIELD[tensor.datatype])
    if isinstance(tensor.data, np.ndarray):
        values.extend(tensor.data.ravel().tolist())
    else:
        values.extend(e if isinstance(e, bytes) else str(e).encode() for e in tensor.data)


def encode_tensor_metadata(target: Any, tensors: list[TensorMetadata] | None) -> None:
    for tensor in tensors or ():
        target.add(name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape))
