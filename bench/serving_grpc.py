"""The gRPC side of the benches: the Open Inference Protocol request they send, and the check of its answer.

The request is serialised once (here, with the ``open-inference-grpc`` messages the runtime itself uses) and
sent unchanged by bench/grpcload; one answer of every server is decoded here before any load. Only the
bench's own process imports these messages (KServe's server has its own copy of the same proto package).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

METHOD = "/inference.GRPCInferenceService/ModelInfer"
# Open Inference Protocol datatypes an answer of class indices comes in, and how raw contents hold them
INTEGER_TYPES = {"INT64": np.int64, "INT32": np.int32, "UINT8": np.uint8, "INT8": np.int8}


def infer_request(model_name: str, images: list[bytes]) -> bytes:
    """A serialised ``ModelInferRequest``: one BYTES input ``input-0`` holding the encoded images, in
    ``contents.bytes_contents`` (what KServe's and Triton's clients send for BYTES)."""
    from open_inference.grpc import protocol as pb

    tensor = pb.ModelInferRequest.InferInputTensor(
        name="input-0",
        datatype="BYTES",
        shape=[len(images)],
        contents=pb.InferTensorContents(bytes_contents=images),
    )
    return pb.ModelInferRequest(model_name=model_name, inputs=[tensor]).SerializeToString()


def answer_classes(answer: bytes) -> list[int]:
    """The first output of a serialised ``ModelInferResponse`` as integers, from its typed contents or
    its raw contents (little-endian, as the protocol sends them)."""
    from open_inference.grpc import protocol as pb

    response = pb.ModelInferResponse.FromString(answer)
    output = response.outputs[0]
    if response.raw_output_contents:
        dtype = np.dtype(INTEGER_TYPES[output.datatype]).newbyteorder("<")
        return [int(v) for v in np.frombuffer(response.raw_output_contents[0], dtype=dtype)]
    contents = output.contents
    return [int(v) for v in (*contents.int64_contents, *contents.int_contents, *contents.uint_contents)]


def answer_is(expected: list[int]) -> Callable[[bytes], bool]:
    """A check of a serialised answer: its classes are ``expected``."""

    def ok(answer: bytes) -> bool:
        from google.protobuf.message import DecodeError

        try:
            return answer_classes(answer) == expected
        except (DecodeError, ValueError, KeyError, IndexError):
            return False

    return ok


def unary(port: int, method: str, body: bytes, timeout: float = 10.0) -> bytes | None:
    """One call of ``method`` on 127.0.0.1:``port`` with the serialised ``body``: the serialised answer,
    None for a status other than OK, OSError while nothing answers (UNAVAILABLE)."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(method)
        try:
            return call(body, timeout=timeout)
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise OSError(f"gRPC {error.code().name}: {error.details()}") from None
            return None
