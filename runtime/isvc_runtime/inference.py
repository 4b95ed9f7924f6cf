"""Typed Open Inference (KServe v2) requests and responses, independent of how they travel.

A protocol codec (:mod:`isvc_runtime.codecs.v2` for JSON; a gRPC or binary-tensor front end alike) turns
what arrived into an :class:`InferenceRequest` of named, typed :class:`Tensor` values, and an
:class:`InferenceResponse` back into its wire form. In between, the data plane (:mod:`.dataplane`) maps
tensors to the handler's rows and the handler's answers to tensors, here.

The first dimension of every input is the batch dimension: an input of shape ``[N, ...]`` gives N
rows. Numeric rows are numpy views (no per-element Python work); BYTES elements (text or base64
images) stay as they came. With several inputs, row ``i`` is ``{"data": <first input's row i>,
"<name>": <row i of each input>}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .codecs.jsonio import dumps
from .errors import InputError

NUMPY_TYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
DATATYPES = frozenset([*NUMPY_TYPES, "BYTES"])
_DATATYPE_OF = {np.dtype(t).str: name for name, t in NUMPY_TYPES.items()}
_KINDS_ALLOWED = {"b": "b", "u": "bui", "i": "bui", "f": "buif"}


@dataclass(slots=True)
class Tensor:
    """A named tensor. ``data``: a numpy array of ``shape`` for numeric datatypes; for BYTES, the
    elements in row-major order (``str`` or ``bytes``)."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray | list[Any]
    parameters: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """An output a client asks for by name, with its per-output parameters."""

    name: str
    parameters: dict[str, Any] | None = None


@dataclass(slots=True)
class InferenceRequest:
    """What a client asked a model: its inputs, an optional id and request parameters, and the outputs
    it asks for (None: every output)."""

    inputs: list[Tensor]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[RequestedOutput] | None = None


@dataclass(slots=True)
class InferenceResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[Tensor] = field(default_factory=list)
    parameters: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    """A tensor a model takes or gives: name, datatype, shape (``-1`` for a variable dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def check_datatype(name: str, datatype: Any) -> str:
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InputError(
            f"input {name!r}: unknown datatype {datatype!r} (expected one of {', '.join(sorted(DATATYPES))})"
        )
    return datatype


def check_shape(name: str, shape: Any) -> list[int]:
    if not isinstance(shape, list | tuple) or not shape:
        raise InputError(f"input {name!r}: 'shape' must be a non-empty list of dimensions")
    for dim in shape:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            raise InputError(f"input {name!r}: shape {list(shape)} must hold non-negative integers")
    return list(shape)


def tensor_from_values(name: str, datatype: str, shape: list[int], values: Any) -> Tensor:
    """A tensor from nested (or flat) lists of values, checked against its datatype and shape."""
    if datatype == "BYTES":
        return Tensor(name, datatype, shape, _bytes_elements(name, shape, values))
    return Tensor(name, datatype, shape, _numeric(name, datatype, shape, values))


def _numeric(name: str, datatype: str, shape: list[int], data: Any) -> np.ndarray:
    dtype = NUMPY_TYPES[datatype]
    try:
        array = np.asarray(data)
    except ValueError:
        raise InputError(f"input {name!r}: 'data' is ragged (nested lists of different lengths)") from None
    kind = array.dtype.kind if array.size else np.dtype(dtype).kind
    if kind not in _KINDS_ALLOWED[np.dtype(dtype).kind]:
        raise InputError(f"input {name!r}: 'data' holds {_describe(array)} but the datatype is {datatype}")
    if array.size != math.prod(shape):
        raise InputError(
            f"input {name!r}: shape {shape} needs {math.prod(shape)} elements, 'data' has {array.size}"
        )
    try:
        return array.astype(dtype, copy=False).reshape(shape)
    except (ValueError, OverflowError) as exc:
        raise InputError(f"input {name!r}: 'data' does not fit {datatype}: {exc}") from None


def _describe(array: np.ndarray) -> str:
    return {"U": "strings", "S": "bytes", "O": "mixed values", "f": "floats", "b": "booleans"}.get(
        array.dtype.kind, str(array.dtype)
    )


def _bytes_elements(name: str, shape: list[int], data: Any) -> list[Any]:
    flat = _flatten(data)
    for element in flat:
        if not isinstance(element, str | bytes):
            raise InputError(f"input {name!r}: BYTES elements must be strings, got {type(element).__name__}")
    if len(flat) != math.prod(shape):
        raise InputError(
            f"input {name!r}: shape {shape} needs {math.prod(shape)} elements, 'data' has {len(flat)}"
        )
    return flat


def _flatten(data: list[Any]) -> list[Any]:
    if not any(isinstance(element, list) for element in data):
        return data
    flat: list[Any] = []
    for element in data:
        flat.extend(_flatten(element) if isinstance(element, list) else [element])
    return flat


def _column(tensor: Tensor) -> Sequence[Any]:
    """The tensor's rows along its first dimension."""
    if isinstance(tensor.data, np.ndarray):
        return tensor.data
    per_row = math.prod(tensor.shape[1:])
    if per_row == 1:
        return tensor.data
    return [tensor.data[i : i + per_row] for i in range(0, len(tensor.data), per_row)]


def to_rows(request: InferenceRequest) -> list[Any]:
    """The handler's rows (TorchServe's shape: dicts with ``data``) for a request's inputs."""
    if not request.inputs:
        raise InputError('the request must have a non-empty "inputs" list')
    columns = [(tensor.name, _column(tensor)) for tensor in request.inputs]
    first_name, first = columns[0]
    count = len(first)
    for name, column in columns[1:]:
        if len(column) != count:
            raise InputError(f"input {name!r} has {len(column)} rows but {first_name!r} has {count}")
    if count == 0:
        raise InputError("the inputs hold no rows (first dimension is 0)")
    if len(columns) == 1:
        return [{"data": first[i]} for i in range(count)]
    rows = []
    for i in range(count):
        row: dict[str, Any] = {"data": first[i]}
        for name, column in columns:
            row[name] = column[i]
        rows.append(row)
    return rows


def answers_to_outputs(answers: list[Any], name: str = "output-0") -> list[Tensor]:
    """Answers stacked into one output tensor when they are numbers of one shape, else BYTES (JSON
    text for structured answers)."""
    try:
        array = np.asarray(answers)
    except (ValueError, TypeError):
        array = None
    if array is not None and array.dtype.kind in "biuf" and array.dtype.str in _DATATYPE_OF:
        return [Tensor(name, _DATATYPE_OF[array.dtype.str], list(array.shape), np.ascontiguousarray(array))]
    data = [a if isinstance(a, str) else dumps(a).decode() for a in answers]
    return [Tensor(name, "BYTES", [len(data)], data)]


def select_outputs(outputs: list[Tensor], requested: list[RequestedOutput] | None) -> list[Tensor]:
    """The outputs a request asked for, in its order, each with its per-output parameters; 400 for a
    name the model does not give."""
    if not requested:
        return outputs
    by_name = {tensor.name: tensor for tensor in outputs}
    selected = []
    for wanted in requested:
        tensor = by_name.get(wanted.name)
        if tensor is None:
            raise InputError(
                f"unknown output {wanted.name!r} (the model gives {', '.join(repr(n) for n in by_name)})"
            )
        if wanted.parameters:
            tensor = Tensor(tensor.name, tensor.datatype, tensor.shape, tensor.data, dict(wanted.parameters))
        selected.append(tensor)
    return selected


def tensor_metadata(declared: Any) -> list[TensorMetadata] | None:
    """Declared tensors (``[{"name", "datatype", "shape"}, ...]``) as metadata; None when absent or
    malformed (the model's metadata then says its tensors are unknown)."""
    if not isinstance(declared, list | tuple):
        return None
    tensors = []
    for item in declared:
        if not isinstance(item, dict):
            return None
        name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        if not isinstance(name, str) or not isinstance(datatype, str) or datatype not in DATATYPES:
            return None
        if not isinstance(shape, list | tuple) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape
        ):
            return None
        tensors.append(TensorMetadata(name, datatype, tuple(shape)))
    return tensors
