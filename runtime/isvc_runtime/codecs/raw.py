"""Tensors as raw bytes, the form both the gRPC ``raw_input_contents`` / ``raw_output_contents`` and the
REST binary tensor extension carry: numeric elements little-endian in row-major order; a BYTES tensor as
its elements, each preceded by its length as a little-endian uint32 (Triton's binary data extension,
docs/protocol/extension_binary_data.md; KServe ``python/kserve/kserve/utils/utils.py`` reads it the same
way). Pure functions."""

from __future__ import annotations

import math
import struct

import numpy as np

from ..errors import InputError
from ..inference import NUMPY_TYPES, Tensor

_LENGTH = struct.Struct("<I")


def tensor_from_raw(name: str, datatype: str, shape: list[int], raw: bytes) -> Tensor:
    """The tensor ``raw`` holds; 400 when its size is not what ``shape`` and ``datatype`` need."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return Tensor(name, datatype, shape, _bytes_elements(name, shape, count, raw))
    dtype = np.dtype(NUMPY_TYPES[datatype]).newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise InputError(
            f"input {name!r}: shape {shape} of {datatype} needs {count * dtype.itemsize} bytes, "
            f"the raw content has {len(raw)}"
        )
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    return Tensor(name, datatype, shape, array.astype(dtype.newbyteorder("="), copy=False))


def _bytes_elements(name: str, shape: list[int], count: int, raw: bytes) -> list[bytes]:
    elements: list[bytes] = []
    offset, size = 0, len(raw)
    while offset < size:
        if offset + 4 > size:
            raise InputError(f"input {name!r}: the raw BYTES content ends inside an element's length")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > size:
            raise InputError(
                f"input {name!r}: a raw BYTES element of {length} bytes runs past the content's end"
            )
        elements.append(raw[offset : offset + length])
        offset += length
    if len(elements) != count:
        raise InputError(
            f"input {name!r}: shape {shape} needs {count} elements, the raw content has {len(elements)}"
        )
    return elements


def raw_of(tensor: Tensor) -> bytes:
    """``tensor`` as raw bytes."""
    if isinstance(tensor.data, np.ndarray):
        return np.ascontiguousarray(tensor.data, dtype=tensor.data.dtype.newbyteorder("<")).tobytes()
    parts: list[bytes] = []
    for element in tensor.data:
        encoded = element if isinstance(element, bytes) else str(element).encode()
        parts.append(_LENGTH.pack(len(encoded)))
        parts.append(encoded)
    return b"".join(parts)
