"""The runtime's gRPC front end (Open Inference Protocol, ``inference.GRPCInferenceService``, and
``grpc.health.v1``) on the MNIST example's seed store, beside its REST endpoints in the same process."""

from __future__ import annotations

import base64
import io
import json
import re
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from isvc_runtime.grpc.stubs import SERVICE_NAME, GRPCInferenceServiceStub, health_pb2, health_pb2_grpc, pb
from runtime_support import MNIST_REQUEST, RuntimeProcess, serving_mnist

from e2e.processes import free_port

MAX_REQUEST_SIZE = 300_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    grpc_port = free_port()
    with serving_mnist(
        tmp_path_factory.mktemp("grpc-store"), MAX_REQUEST_SIZE, "--grpc-port", str(grpc_port)
    ) as process:
        process.grpc_port = grpc_port  # type: ignore[attr-defined]
        yield process


@pytest.fixture(scope="module")
def channel(server: RuntimeProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as opened:  # type: ignore[attr-defined]
        yield opened


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> GRPCInferenceServiceStub:
    return GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def digit_png() -> bytes:
    return base64.b64decode(json.loads(MNIST_REQUEST.read_text())["instances"][0]["data"])


def digit_fp32(png: bytes) -> np.ndarray:
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)), dtype=np.float32) / 255.0
    return ((pixels - 0.1307) / 0.3081).reshape(1, 1, 28, 28).astype(np.float32)


def fp32_request(array: np.ndarray, *, raw: bool, model: str = "mnist", **fields: Any) -> Any:
    request = pb.ModelInferRequest(model_name=model, **fields)
    tensor = request.inputs.add(name="input-0", datatype="FP32", shape=list(array.shape))
    if raw:
        request.raw_input_contents.append(array.astype("<f4").tobytes())
    else:
        tensor.contents.fp32_contents.extend(array.ravel().tolist())
    return request


def test_health_liveness_readiness_and_metadata(
    stub: GRPCInferenceServiceStub, channel: grpc.Channel
) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="torchserve")).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="mnist", version="1.0")).ready
    server = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert server.name == "torch-isvc" and server.version
    model = stub.ModelMetadata(pb.ModelMetadataRequest(name="mnist"))
    assert model.name == "mnist" and list(model.versions) == ["1.0"] and model.platform == "pytorch"
    assert model.inputs[0].shape[0] == -1
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_fp32_in_contents_answers_in_contents(stub: GRPCInferenceServiceStub, digit_png: bytes) -> None:
    answer = stub.ModelInfer(fp32_request(digit_fp32(digit_png), raw=False, id="req-1"))
    assert answer.model_name == "mnist" and answer.model_version == "1.0" and answer.id == "req-1"
    (output,) = answer.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("output-0", "INT64", [1])
    assert list(output.contents.int64_contents) == [2] and not answer.raw_output_contents


def test_raw_request_gets_a_raw_answer(stub: GRPCInferenceServiceStub, digit_png: bytes) -> None:
    batch = np.concatenate([digit_fp32(digit_png)] * 3)
    answer = stub.ModelInfer(fp32_request(batch, raw=True, model="torchserve"))
    assert answer.model_name == "torchserve" and list(answer.outputs[0].shape) == [3]
    assert np.frombuffer(answer.raw_output_contents[0], "<i8").tolist() == [2, 2, 2]


def test_bytes_png_in_contents_and_raw(stub: GRPCInferenceServiceStub, digit_png: bytes) -> None:
    request = pb.ModelInferRequest(model_name="mnist")
    request.inputs.add(name="input-0", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(
        [digit_png, digit_png]
    )
    assert list(stub.ModelInfer(request).outputs[0].contents.int64_contents) == [2, 2]
    raw = pb.ModelInferRequest(model_name="mnist")
    raw.inputs.add(name="input-0", datatype="BYTES", shape=[1])
    raw.raw_input_contents.append(struct.pack("<I", len(digit_png)) + digit_png)
    assert np.frombuffer(stub.ModelInfer(raw).raw_output_contents[0], "<i8").tolist() == [2]


def test_parameters_travel_and_requested_outputs_are_honoured(
    stub: GRPCInferenceServiceStub, digit_png: bytes
) -> None:
    request = fp32_request(digit_fp32(digit_png), raw=False)
    request.parameters["trace"].string_param = "abc"
    output = request.outputs.add(name="output-0")
    output.parameters["note"].int64_param = 7
    answer = stub.ModelInfer(request)
    assert answer.parameters["trace"].string_param == "abc"
    assert answer.outputs[0].parameters["note"].int64_param == 7


def test_grpc_and_rest_requests_share_the_model_and_metrics(
    server: RuntimeProcess, stub: GRPCInferenceServiceStub, digit_png: bytes
) -> None:
    request = fp32_request(digit_fp32(digit_png), raw=True)

    def over_grpc(_: int) -> list[int]:
        return np.frombuffer(stub.ModelInfer(request).raw_output_contents[0], "<i8").tolist()

    def over_rest(_: int) -> list[int]:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            answer = client.post("/v1/models/mnist:predict", content=MNIST_REQUEST.read_bytes())
        return answer.json()["predictions"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(over_grpc, range(16))) + list(pool.map(over_rest, range(16)))
    assert answers == [[2]] * 32
    metrics = server.client.get("/metrics").text
    infer = re.search(
        r'isvc_requests_total\{[^}]*endpoint="grpc_infer"[^}]*protocol="grpc"[^}]*\} (\S+)', metrics
    )
    assert infer is not None and float(infer.group(1)) >= 16, metrics[:2000]


def _infer(**fields: Any) -> Any:
    return pb.ModelInferRequest(model_name="mnist", **fields)


def _tensor(datatype: str, shape: list[int], **contents: Any) -> Any:
    tensor = pb.ModelInferRequest.InferInputTensor(name="input-0", datatype=datatype, shape=shape)
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    return tensor


BAD_GRPC = [
    # (id, method, request (a message or wire bytes), status code, words the details must contain)
    (
        "malformed-protobuf",
        "ModelInfer",
        b"\x0a\xff\xff\xff",
        grpc.StatusCode.INVALID_ARGUMENT,
        "not a valid",
    ),
    ("no-inputs", "ModelInfer", _infer(), grpc.StatusCode.INVALID_ARGUMENT, "inputs"),
    (
        "raw-size-not-shape-times-dtype",
        "ModelInfer",
        _infer(inputs=[_tensor("FP32", [1, 1, 28, 28])], raw_input_contents=[b"\0" * 100]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "3136 bytes",
    ),
    (
        "raw-entries-not-one-per-input",
        "ModelInfer",
        _infer(inputs=[_tensor("FP32", [1])], raw_input_contents=[b"\0" * 4, b"\0" * 4]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "one per input",
    ),
    (
        "raw-bytes-truncated",
        "ModelInfer",
        _infer(inputs=[_tensor("BYTES", [1])], raw_input_contents=[struct.pack("<I", 99) + b"abc"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "past the content",
    ),
    (
        "unknown-datatype",
        "ModelInfer",
        _infer(inputs=[_tensor("FP8", [1], fp32_contents=[1.0])]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "datatype",
    ),
    (
        "contents-in-the-wrong-field",
        "ModelInfer",
        _infer(inputs=[_tensor("FP32", [1], int64_contents=[1])]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "fp32_contents",
    ),
    (
        "shape-data-mismatch",
        "ModelInfer",
        _infer(inputs=[_tensor("FP32", [1, 1, 28, 28], fp32_contents=[0.0] * 10)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "784",
    ),
    (
        "datatype-the-model-cannot-take",
        "ModelInfer",
        _infer(inputs=[_tensor("BYTES", [1], bytes_contents=[b"hello"])]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "image",
    ),
    (
        "unknown-model",
        "ModelInfer",
        pb.ModelInferRequest(model_name="resnet", inputs=[_tensor("INT64", [1], int64_contents=[1])]),
        grpc.StatusCode.NOT_FOUND,
        "resnet",
    ),
    (
        "unknown-version",
        "ModelInfer",
        _infer(model_version="9", inputs=[_tensor("INT64", [1], int64_contents=[1])]),
        grpc.StatusCode.NOT_FOUND,
        "version",
    ),
    (
        "unknown-model-ready",
        "ModelReady",
        pb.ModelReadyRequest(name="resnet"),
        grpc.StatusCode.NOT_FOUND,
        "resnet",
    ),
    (
        "unknown-model-metadata",
        "ModelMetadata",
        pb.ModelMetadataRequest(name="mnist", version="2.0"),
        grpc.StatusCode.NOT_FOUND,
        "version",
    ),
    (
        "unknown-output",
        "ModelInfer",
        _infer(
            inputs=[_tensor("BYTES", [1], bytes_contents=[b""])],
            outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="logits")],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "",
    ),
    (
        "over-the-message-limit",
        "ModelInfer",
        _infer(inputs=[_tensor("FP32", [1])], raw_input_contents=[b"\0" * (MAX_REQUEST_SIZE + 1)]),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "",
    ),
]


@pytest.mark.parametrize(
    ("method", "request_", "code", "words"),
    [case[1:] for case in BAD_GRPC],
    ids=[case[0] for case in BAD_GRPC],
)
def test_bad_input_gets_its_status_code_and_concurrent_requests_are_undisturbed(
    channel: grpc.Channel,
    stub: GRPCInferenceServiceStub,
    digit_png: bytes,
    method: str,
    request_: Any,
    code: grpc.StatusCode,
    words: str,
) -> None:
    call = channel.unary_unary(
        f"/{SERVICE_NAME}/{method}", request_serializer=None, response_deserializer=None
    )
    data = request_ if isinstance(request_, bytes) else request_.SerializeToString()
    good = fp32_request(digit_fp32(digit_png), raw=True)
    with ThreadPoolExecutor(4) as pool:
        concurrent = [pool.submit(stub.ModelInfer, good) for _ in range(4)]
        with pytest.raises(grpc.RpcError) as raised:
            call(data, timeout=30)
        answers = [np.frombuffer(f.result().raw_output_contents[0], "<i8").tolist() for f in concurrent]
    assert raised.value.code() == code, raised.value.details()
    assert words.lower() in (raised.value.details() or "").lower()
    assert "Traceback" not in (raised.value.details() or "")
    assert answers == [[2]] * 4


def test_errors_carry_the_messages_rest_gives(server: RuntimeProcess, stub: GRPCInferenceServiceStub) -> None:
    cases = [
        (
            pb.ModelInferRequest(model_name="resnet", inputs=[_tensor("INT64", [1], int64_contents=[1])]),
            "/v2/models/resnet/infer",
        ),
        (
            _infer(model_version="9", inputs=[_tensor("INT64", [1], int64_contents=[1])]),
            "/v2/models/mnist/versions/9/infer",
        ),
        (
            _infer(inputs=[_tensor("FP32", [1, 1, 28, 28], fp32_contents=[0.0] * 10)]),
            "/v2/models/mnist/infer",
        ),
    ]
    for request, path in cases:
        body = {"inputs": [{"name": "input-0", "shape": [1], "datatype": "INT64", "data": [1]}]}
        if path.endswith("mnist/infer"):
            body = {
                "inputs": [
                    {"name": "input-0", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 10}
                ]
            }
        rest = server.client.post(path, json=body).json()["error"]
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(request)
        assert raised.value.details() == rest


def test_the_mnist_request_still_answers_after_the_bad_ones(
    server: RuntimeProcess, stub: GRPCInferenceServiceStub
) -> None:
    assert server.client.post("/v1/models/mnist:predict", content=MNIST_REQUEST.read_bytes()).json() == {
        "predictions": [2]
    }
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
