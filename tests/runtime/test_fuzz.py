"""A seeded fuzz test (issue 16): valid requests of every REST endpoint and gRPC method, mutated (bytes
flipped, cut or inserted; JSON values swapped for values of other types; protobuf fields set to nonsense),
sent to one server. A malformed request gets 400 / INVALID_ARGUMENT (NOT_FOUND when a mutation renamed the
gRPC request's model); a mutation that stays valid gets its answer; nothing gets 500 / INTERNAL, and the
server answers the seed request correctly afterwards."""

from __future__ import annotations

import base64
import copy
import json
import random
import struct
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from isvc_runtime.grpc.stubs import SERVICE_NAME, pb
from runtime_support import MNIST_REQUEST, RuntimeProcess, serving_mnist

from e2e.processes import free_port

SEED = 16
REST_CASES = 800
GRPC_CASES = 400
ODD_VALUES: list[Any] = [
    None, True, 0, -1, 2**70, 1e308, "", "FP32", "BYTES", "x" * 50, [], [[]], [1, [2]], {}, {"a": 1}, [None],
]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    port = free_port()
    with serving_mnist(tmp_path_factory.mktemp("fuzz-store"), 300_000, "--grpc-port", str(port)) as process:
        process.grpc_port = port  # type: ignore[attr-defined]
        yield process


def digit_png() -> bytes:
    return base64.b64decode(json.loads(MNIST_REQUEST.read_text())["instances"][0]["data"])


def digit_fp32() -> np.ndarray:
    import io

    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(digit_png())), dtype=np.float32) / 255.0
    return ((pixels - 0.1307) / 0.3081).reshape(1, 1, 28, 28).astype(np.float32)


def rest_corpus() -> list[tuple[str, dict[str, str], Any]]:
    """(path, headers, body: a JSON value or bytes) of valid requests."""
    b64 = base64.b64encode(digit_png()).decode()
    fp32 = {
        "name": "input-0",
        "shape": [1, 1, 28, 28],
        "datatype": "FP32",
        "data": digit_fp32().ravel().tolist(),
    }
    png = {"name": "input-0", "shape": [1], "datatype": "BYTES", "data": [b64]}
    raw = struct.pack("<I", len(digit_png())) + digit_png()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    binary_headers = {"Inference-Header-Content-Length": str(len(header))}
    return [
        ("/v1/models/mnist:predict", {}, json.loads(MNIST_REQUEST.read_text())),
        ("/v1/models/mnist:explain", {}, json.loads(MNIST_REQUEST.read_text())),
        ("/v2/models/mnist/infer", {}, {"id": "f", "inputs": [png]}),
        ("/v2/models/mnist/infer", {}, {"inputs": [fp32], "parameters": {"binary_data_output": True}}),
        ("/v2/models/mnist/versions/1.0/infer", {}, {"inputs": [png], "outputs": [{"name": "output-0"}]}),
        ("/v2/models/mnist/explain", {}, {"inputs": [png]}),
        ("/v2/models/mnist/infer", binary_headers, header + raw),
        ("/predictions/mnist", {}, digit_png()),
    ]


def mutate_json(value: Any, rng: random.Random) -> Any:
    """``value`` with one of its nested values (an object's, a list's) replaced by an odd value."""
    mutated = copy.deepcopy(value)
    containers: list[Any] = []

    def walk(node: Any, depth: int) -> None:
        if isinstance(node, dict | list) and node and depth < 4:
            containers.append(node)
            for child in node.values() if isinstance(node, dict) else node[:3]:
                walk(child, depth + 1)

    walk(mutated, 0)
    if not containers:
        return rng.choice(ODD_VALUES)
    node = rng.choice(containers)
    key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
    if rng.random() < 0.15 and isinstance(node, dict):
        del node[key]
    else:
        node[key] = rng.choice(ODD_VALUES)
    return mutated


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    kind = rng.randrange(3)
    if kind == 0 and data:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:
        del data[rng.randrange(len(data) + 1) :]
    else:
        at = rng.randrange(len(data) + 1)
        data[at:at] = rng.randbytes(rng.randint(1, 16))
    return bytes(data)


def rest_case(
    rng: random.Random, seeds: list[tuple[str, dict[str, str], Any]]
) -> tuple[str, dict[str, str], bytes]:
    path, headers, body = rng.choice(seeds)
    headers = dict(headers)
    if isinstance(body, bytes):
        if headers and rng.random() < 0.3:
            headers["Inference-Header-Content-Length"] = rng.choice(["-1", "x", "0", str(len(body) + 1), "3"])
            return path, headers, body
        return path, headers, mutate_bytes(body, rng)
    if rng.random() < 0.6:
        return path, headers, json.dumps(mutate_json(body, rng)).encode()
    return path, headers, mutate_bytes(json.dumps(body).encode(), rng)


def test_malformed_rest_bodies_get_400_never_500(server: RuntimeProcess) -> None:
    rng = random.Random(SEED)
    seeds = rest_corpus()
    statuses: dict[int, int] = {}
    for _ in range(REST_CASES):
        path, headers, body = rest_case(rng, seeds)
        response = server.client.post(path, content=body, headers=headers)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code in (200, 400), (path, headers, body[:300], response.text[:500])
    assert statuses.get(400, 0) > REST_CASES // 2, statuses
    assert server.client.post("/v1/models/mnist:predict", content=MNIST_REQUEST.read_bytes()).json() == {
        "predictions": [2]
    }


def grpc_corpus() -> list[tuple[str, Any]]:
    fp32 = pb.ModelInferRequest(model_name="mnist", id="f")
    fp32.inputs.add(name="input-0", datatype="FP32", shape=[1, 1, 28, 28])
    fp32.raw_input_contents.append(digit_fp32().tobytes())
    contents = pb.ModelInferRequest(model_name="mnist", model_version="1.0")
    contents.inputs.add(name="input-0", datatype="BYTES", shape=[1]).contents.bytes_contents.append(
        digit_png()
    )
    contents.outputs.add(name="output-0").parameters["p"].int64_param = 1
    return [
        ("ModelInfer", fp32),
        ("ModelInfer", contents),
        ("ModelReady", pb.ModelReadyRequest(name="mnist")),
        ("ModelMetadata", pb.ModelMetadataRequest(name="mnist", version="1.0")),
        ("ServerMetadata", pb.ServerMetadataRequest()),
        ("ServerReady", pb.ServerReadyRequest()),
        ("ServerLive", pb.ServerLiveRequest()),
    ]


def mutate_message(message: Any, rng: random.Random) -> Any:
    """An infer request with one field set to nonsense (wrong datatype, shape, sizes, contents)."""
    mutated = copy.deepcopy(message)
    if not isinstance(mutated, pb.ModelInferRequest) or not mutated.inputs:
        return mutated
    tensor = mutated.inputs[0]
    choices: list[Callable[[], None]] = [
        lambda: setattr(
            tensor, "datatype", rng.choice(["FP8", "", "fp32", "INT64", "BOOL", "FP16", "BYTES", "UINT8"])
        ),
        lambda: tensor.shape.extend([rng.choice([0, 2, -1, 2**40])]),
        lambda: tensor.ClearField("shape"),
        lambda: setattr(tensor, "name", ""),
        lambda: mutated.raw_input_contents.append(rng.randbytes(rng.randint(0, 64))),
        lambda: tensor.contents.fp32_contents.extend([1.0, float("nan")]),
        lambda: tensor.contents.int_contents.extend([1]),
        lambda: mutated.ClearField("inputs"),
        lambda: mutated.outputs.add(name=rng.choice(["", "nope", "output-0"])),
        lambda: setattr(mutated, "model_version", rng.choice(["2", "", "1.0"])),
    ]
    for _ in range(rng.randint(1, 2)):
        rng.choice(choices)()
    return mutated


def test_malformed_grpc_messages_get_invalid_argument_never_internal(server: RuntimeProcess) -> None:
    rng = random.Random(SEED)
    seeds = grpc_corpus()
    allowed = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
    codes: dict[str, int] = {}
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:  # type: ignore[attr-defined]
        for _ in range(GRPC_CASES):
            method, message = rng.choice(seeds)
            if rng.random() < 0.5:
                data = mutate_message(message, rng).SerializeToString()
            else:
                data = mutate_bytes(message.SerializeToString(), rng)
            call = channel.unary_unary(f"/{SERVICE_NAME}/{method}")
            try:
                call(data, timeout=60)
                code, details = grpc.StatusCode.OK, ""
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details() or ""
            codes[code.name] = codes.get(code.name, 0) + 1
            assert code in allowed, (method, data[:300], code, details)
            assert "Traceback" not in details
        ready = pb.ModelReadyResponse.FromString(
            channel.unary_unary(f"/{SERVICE_NAME}/ModelReady")(
                pb.ModelReadyRequest(name="mnist").SerializeToString()
            )
        )
    assert ready.ready and codes.get("INVALID_ARGUMENT", 0) > GRPC_CASES // 4, codes
    assert server.client.post("/v1/models/mnist:predict", content=MNIST_REQUEST.read_bytes()).json() == {
        "predictions": [2]
    }
