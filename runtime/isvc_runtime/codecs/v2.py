"""KServe v2 (Open Inference Protocol) tensors ↔ handler rows.

The first dimension of every input is the batch dimension: an input of shape ``[N, ...]`` gives N
rows. Numeric rows are numpy views (no per-element Python work); BYTES elements (text or base64
images) stay strings. With several inputs, row ``i`` is ``{"data": <first input's row i>,
"<name>": <row i of each input>}``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import InputError
from .jsonio import dumps

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


def _check_shape(name: str, shape: Any) -> list[int]:
    if not isinstance(shape, list) or not shape:
        raise InputError(f"input {name!r}: 'shape' must be a non-empty list of dimensions")
    for dim in shape:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            raise InputError(f"input {name!r}: shape {shape} must hold non-negative integers")
    return shape


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


def _bytes_rows(name: str, shape: list[int], data: Any) -> list[Any]:
    flat = _flatten(data)
    for element in flat:
        if not isinstance(element, str):
            raise InputError(f"input {name!r}: BYTES elements must be strings, got {type(element).__name__}")
    if len(flat) != math.prod(shape):
        raise InputError(
            f"input {name!r}: shape {shape} needs {math.prod(shape)} elements, 'data' has {len(flat)}"
        )
    per_row = math.prod(shape[1:])
    if per_row == 1:
        return flat
    return [flat[i : i + per_row] for i in range(0, len(flat), per_row)]


def _flatten(data: list[Any]) -> list[Any]:
    if not any(isinstance(element, list) for element in data):
        return data
    flat: list[Any] = []
    for element in data:
        flat.extend(_flatten(element) if isinstance(element, list) else [element])
    return flat


def decode_request(payload: dict[str, Any]) -> tuple[list[Any], list[dict[str, Any]]]:
    """Rows for the handler and the inputs' metadata (name, datatype, per-row shape)."""
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InputError('the request must have a non-empty "inputs" list')
    if "id" in payload and not isinstance(payload["id"], str):
        raise InputError('"id" must be a string')
    if "parameters" in payload and not isinstance(payload["parameters"], dict):
        raise InputError('"parameters" must be an object')
    columns: list[tuple[str, list[Any] | np.ndarray]] = []
    metadata: list[dict[str, Any]] = []
    for position, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise InputError(f"inputs[{position}] must be an object with name, shape, datatype and data")
        name = tensor.get("name")
        if not isinstance(name, str) or not name:
            raise InputError(f"inputs[{position}] needs a 'name' string")
        datatype = tensor.get("datatype")
        if datatype not in DATATYPES:
            raise InputError(
                f"input {name!r}: unknown datatype {datatype!r} "
                f"(expected one of {', '.join(sorted(DATATYPES))})"
            )
        shape = _check_shape(name, tensor.get("shape"))
        data = tensor.get("data")
        if not isinstance(data, list):
            raise InputError(f"input {name!r}: 'data' must be a list")
        if datatype == "BYTES":
            column: list[Any] | np.ndarray = _bytes_rows(name, shape, data)
        else:
            column = _numeric(name, datatype, shape, data)
        columns.append((name, column))
        metadata.append({"name": name, "datatype": datatype, "shape": [-1, *shape[1:]]})
    count = len(columns[0][1])
    for name, column in columns[1:]:
        if len(column) != count:
            raise InputError(f"input {name!r} has {len(column)} rows but {columns[0][0]!r} has {count}")
    if count == 0:
        raise InputError("the inputs hold no rows (first dimension is 0)")
    first = columns[0][1]
    if len(columns) == 1:
        return [{"data": first[i]} for i in range(count)], metadata
    rows = []
    for i in range(count):
        row: dict[str, Any] = {"data": first[i]}
        for name, column in columns:
            row[name] = column[i]
        rows.append(row)
    return rows, metadata


def encode_outputs(answers: list[Any], name: str = "output-0") -> list[dict[str, Any]]:
    """Answers stacked into one output tensor when they are numbers of one shape, else BYTES (JSON
    text for structured answers)."""
    try:
        array = np.asarray(answers)
    except (ValueError, TypeError):
        array = None
    if array is not None and array.dtype.kind in "biuf" and array.dtype.str in _DATATYPE_OF:
        return [
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": _DATATYPE_OF[array.dtype.str],
                "data": np.ascontiguousarray(array).ravel(),
            }
        ]
    data = [a if isinstance(a, str) else dumps(a).decode() for a in answers]
    return [{"name": name, "shape": [len(data)], "datatype": "BYTES", "data": data}]


def encode_response(
    answers: list[Any], *, model_name: str, model_version: str, request_id: str, parameters: Any = None
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "model_name": model_name,
        "model_version": model_version,
        "id": request_id,
        "outputs": encode_outputs(answers),
    }
    if parameters:
        response["parameters"] = parameters
    return response
