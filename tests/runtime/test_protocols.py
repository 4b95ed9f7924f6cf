"""KServe v1, v2 and TorchServe's native API on the MNIST example's seed model store, started as the
operator starts it (``--model-name`` = the InferenceService's name)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from runtime_support import MNIST_REQUEST, REPO_ROOT, RuntimeProcess, serving_mnist
from support.modules import load_module

MAX_REQUEST_SIZE = 300_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    with serving_mnist(tmp_path_factory.mktemp("mnist-store"), MAX_REQUEST_SIZE) as process:
        yield process


@pytest.fixture(scope="module")
def mnist_data() -> ModuleType:
    return load_module(REPO_ROOT / "examples/mnist/data.py", "mnist_example_data")


@pytest.fixture(scope="module")
def digit_png_b64() -> str:
    return json.loads(MNIST_REQUEST.read_text())["instances"][0]["data"]


def test_the_mnist_request_predicts_2(server: RuntimeProcess) -> None:
    response = server.client.post("/v1/models/mnist:predict", content=MNIST_REQUEST.read_bytes())
    assert response.status_code == 200
    assert response.json() == {"predictions": [2]}


def test_the_mnist_request_under_the_inference_service_name(server: RuntimeProcess) -> None:
    response = server.client.post("/v1/models/torchserve:predict", content=MNIST_REQUEST.read_bytes())
    assert response.json() == {"predictions": [2]}
    assert server.client.get("/v1/models").json() == {"models": ["mnist", "torchserve"]}
    assert server.client.get("/v1/models/torchserve").json() == {"name": "torchserve", "ready": True}


def test_v2_bytes_png_and_fp32_tensor_both_answer_2(server: RuntimeProcess, digit_png_b64: str) -> None:
    bytes_body = {"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": [digit_png_b64]}]}
    response = server.client.post("/v2/models/mnist/infer", json=bytes_body)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == [
        {"name": "output-0", "shape": [1], "datatype": "INT64", "data": [2]}
    ]

    import io

    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(digit_png_b64))), dtype=np.float32) / 255.0
    normalised = ((pixels - 0.1307) / 0.3081).reshape(-1).tolist()
    fp32_body = {
        "inputs": [{"name": "input-0", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": normalised}]
    }
    response = server.client.post("/v2/models/torchserve/infer", json=fp32_body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["model_name"] == "torchserve" and result["model_version"] == "1.0"
    assert result["outputs"][0]["data"] == [2]


def test_native_predictions_endpoint_takes_a_raw_png(server: RuntimeProcess, digit_png_b64: str) -> None:
    response = server.client.post("/predictions/mnist", content=base64.b64decode(digit_png_b64))
    assert response.status_code == 200
    assert response.json() == 2


def test_health_and_metadata_endpoints(server: RuntimeProcess) -> None:
    client = server.client
    assert client.get("/").json() == {"status": "alive"}
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/ping").json() == {"status": "Healthy"}
    assert client.get("/v2").json()["name"] == "torch-isvc"
    assert client.get("/v2/models/mnist/ready").json() == {"name": "mnist", "ready": True}
    metadata = client.get("/v2/models/mnist").json()
    assert (
        metadata["name"] == "mnist" and metadata["versions"] == ["1.0"] and metadata["platform"] == "pytorch"
    )
    assert metadata["inputs"][0]["datatype"] in ("BYTES", "FP32") and metadata["inputs"][0]["shape"][0] == -1


def test_request_id_is_echoed_or_generated(server: RuntimeProcess) -> None:
    echoed = server.client.post(
        "/v1/models/mnist:predict", content=MNIST_REQUEST.read_bytes(), headers={"x-request-id": "trace-42"}
    )
    assert echoed.headers["x-request-id"] == "trace-42"
    generated = server.client.get("/v2/health/ready").headers["x-request-id"]
    assert len(generated) == 32 and generated != server.client.get("/v2/health/ready").headers["x-request-id"]
    failed = server.client.post("/v1/models/mnist:predict", content=b"{", headers={"x-request-id": "bad-1"})
    assert failed.status_code == 400 and failed.headers["x-request-id"] == "bad-1"


def _v2(tensor: dict) -> dict:
    return {"inputs": [{"name": "input-0", **tensor}]}


BAD_INPUTS = [
    # (id, method, path, body (bytes or JSON), status, words the error must contain)
    ("malformed-json", "POST", "/v1/models/mnist:predict", b'{"instances": [', 400, "not valid JSON"),
    ("json-array-body", "POST", "/v1/models/mnist:predict", [1, 2], 400, "JSON object"),
    ("missing-instances", "POST", "/v1/models/mnist:predict", {"data": []}, 400, "instances"),
    ("instances-not-list", "POST", "/v1/models/mnist:predict", {"instances": "x"}, 400, "must be a list"),
    ("instances-empty", "POST", "/v1/models/mnist:predict", {"instances": []}, 400, "empty"),
    ("bad-base64", "POST", "/v1/models/mnist:predict", {"instances": [{"data": "%%%"}]}, 400, "base64"),
    ("not-an-image", "POST", "/v1/models/mnist:predict", {"instances": [{"data": "aGVsbG8="}]}, 400, "image"),
    ("row-without-data", "POST", "/v1/models/mnist:predict", {"instances": [{"target": 0}]}, 400, "data"),
    (
        "wrong-tensor-shape-v1",
        "POST",
        "/v1/models/mnist:predict",
        {"instances": [[1.0, 2.0, 3.0]]},
        400,
        "shape",
    ),
    ("tensor-of-strings-v1", "POST", "/v1/models/mnist:predict", {"instances": [["a", "b"]]}, 400, "tensor"),
    ("empty-body", "POST", "/v1/models/mnist:predict", b"", 400, "empty"),
    ("missing-inputs", "POST", "/v2/models/mnist/infer", {"outputs": []}, 400, "inputs"),
    (
        "unknown-datatype",
        "POST",
        "/v2/models/mnist/infer",
        _v2({"shape": [1], "datatype": "FP8", "data": [1]}),
        400,
        "datatype",
    ),
    (
        "shape-data-mismatch",
        "POST",
        "/v2/models/mnist/infer",
        _v2({"shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 10}),
        400,
        "784",
    ),
    (
        "strings-as-fp32",
        "POST",
        "/v2/models/mnist/infer",
        _v2({"shape": [2], "datatype": "FP32", "data": ["a", "b"]}),
        400,
        "FP32",
    ),
    (
        "wrong-shape-v2",
        "POST",
        "/v2/models/mnist/infer",
        _v2({"shape": [1, 1, 28, 27], "datatype": "FP32", "data": [0.0] * 756}),
        400,
        "shape",
    ),
    (
        "bytes-not-strings",
        "POST",
        "/v2/models/mnist/infer",
        _v2({"shape": [1], "datatype": "BYTES", "data": [5]}),
        400,
        "BYTES",
    ),
    (
        "ragged-data",
        "POST",
        "/v2/models/mnist/infer",
        _v2({"shape": [2, 2], "datatype": "INT64", "data": [[1], [2, 3]]}),
        400,
        "ragged",
    ),
    (
        "negative-dimension",
        "POST",
        "/v2/models/mnist/infer",
        _v2({"shape": [-1], "datatype": "INT64", "data": [1]}),
        400,
        "shape",
    ),
    (
        "input-without-name",
        "POST",
        "/v2/models/mnist/infer",
        {"inputs": [{"shape": [1], "datatype": "BYTES", "data": ["x"]}]},
        400,
        "name",
    ),
    ("native-empty-body", "POST", "/predictions/mnist", b"", 400, "empty"),
    ("native-garbage", "POST", "/predictions/mnist", b"\x00\x01garbage", 400, "image"),
    ("unknown-model-v1", "POST", "/v1/models/resnet:predict", {"instances": [1]}, 404, "resnet"),
    (
        "unknown-model-v2",
        "POST",
        "/v2/models/resnet/infer",
        _v2({"shape": [1], "datatype": "INT64", "data": [1]}),
        404,
        "resnet",
    ),
    ("unknown-model-status", "GET", "/v2/models/resnet/ready", None, 404, "resnet"),
    ("unknown-route", "GET", "/v3/anything", None, 404, "no route"),
    ("unknown-v1-verb", "POST", "/v1/models/mnist:train", {"instances": [1]}, 404, "no route"),
    ("get-on-infer", "GET", "/v2/models/mnist/infer", None, 405, "not allowed"),
    (
        "over-max-request-size",
        "POST",
        "/v1/models/mnist:predict",
        b"x" * (MAX_REQUEST_SIZE + 1),
        413,
        "max_request_size",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_gets_its_status_and_the_next_good_request_succeeds(
    server: RuntimeProcess, method: str, path: str, body: object, status: int, words: str
) -> None:
    if isinstance(body, bytes) or body is None:
        response = server.client.request(method, path, content=body)
    else:
        response = server.client.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert words.lower() in error.lower()
    assert "Traceback" not in error
    good = server.client.post("/v1/models/mnist:predict", content=MNIST_REQUEST.read_bytes())
    assert good.status_code == 200 and good.json() == {"predictions": [2]}


def test_chunked_body_over_the_limit_is_refused_without_content_length(server: RuntimeProcess) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"x" * 10_000

    response = server.client.post("/v1/models/mnist:predict", content=chunks())
    assert response.status_code == 413


def test_heldout_accuracy_through_v1_and_v2_batched_requests(
    server: RuntimeProcess, mnist_data: ModuleType
) -> None:
    """All 2,000 held-out images: v1 in requests of 100 PNGs, v2 as FP32 tensors of 16 images sent
    8 at a time (concurrent requests)."""
    images, labels = mnist_data.heldout_split()
    assert len(images) == 2000

    def v1(start: int) -> list[int]:
        response = server.client.post(
            "/v1/models/mnist:predict", json=mnist_data.v1_request(images[start : start + 100])
        )
        assert response.status_code == 200, response.text
        return response.json()["predictions"]

    def v2(start: int) -> list[int]:
        body = mnist_data.v2_fp32_request(images[start : start + 16])
        response = server.client.post("/v2/models/mnist/infer", json=body)
        assert response.status_code == 200, response.text
        return response.json()["outputs"][0]["data"]

    with ThreadPoolExecutor(8) as pool:
        v1_answers = [a for chunk in pool.map(v1, range(0, 2000, 100)) for a in chunk]
        v2_answers = [a for chunk in pool.map(v2, range(0, 2000, 16)) for a in chunk]
    for answers in (v1_answers, v2_answers):
        accuracy = float(np.mean(np.asarray(answers) == labels))
        assert accuracy >= 0.97, accuracy


def _digit_fp32(png_b64: str) -> np.ndarray:
    import io

    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(png_b64))), dtype=np.float32) / 255.0
    return ((pixels - 0.1307) / 0.3081).reshape(1, 1, 28, 28).astype(np.float32)


def _binary_body(header: dict, *tails: bytes) -> tuple[bytes, dict[str, str]]:
    encoded = json.dumps(header).encode()
    return encoded + b"".join(tails), {"Inference-Header-Content-Length": str(len(encoded))}


def _split_answer(response: Any) -> tuple[dict, bytes]:
    length = int(response.headers["inference-header-content-length"])
    return json.loads(response.content[:length]), response.content[length:]


def test_v2_binary_fp32_request_gets_a_binary_answer(server: RuntimeProcess, digit_png_b64: str) -> None:
    batch = np.concatenate([_digit_fp32(digit_png_b64)] * 2)
    raw = batch.astype("<f4").tobytes()
    tensor = {"name": "input-0", "shape": [2, 1, 28, 28], "datatype": "FP32"}
    body, headers = _binary_body(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
            "parameters": {"binary_data_output": True},
        },
        raw,
    )
    response = server.client.post("/v2/models/mnist/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    answer, tail = _split_answer(response)
    (output,) = answer["outputs"]
    assert output == {
        "name": "output-0",
        "shape": [2],
        "datatype": "INT64",
        "parameters": {"binary_data_size": 16},
    }
    assert np.frombuffer(tail, "<i8").tolist() == [2, 2]


def test_v2_binary_bytes_png_and_a_json_answer_per_output(server: RuntimeProcess, digit_png_b64: str) -> None:
    import struct

    png = base64.b64decode(digit_png_b64)
    raw = struct.pack("<I", len(png)) + png
    body, headers = _binary_body(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "output-0", "parameters": {"binary_data": False}}],
        },
        raw,
    )
    response = server.client.post("/v2/models/mnist/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert "inference-header-content-length" not in response.headers
    assert response.json()["outputs"] == [
        {"name": "output-0", "shape": [1], "datatype": "INT64", "data": [2]}
    ]


BAD_BINARY = [
    # (id, JSON header, binary tail, header value (None: the JSON's length), words)
    (
        "size-not-shape-times-dtype",
        {"shape": [1, 1, 28, 28], "datatype": "FP32", "size": 100},
        100,
        None,
        "3136",
    ),
    ("tail-longer-than-sizes", {"shape": [1], "datatype": "FP32", "size": 4}, 8, None, "add up to 4"),
    ("size-past-the-tail", {"shape": [1], "datatype": "FP32", "size": 8}, 4, None, "runs past"),
    ("header-length-past-body", {"shape": [1], "datatype": "FP32", "size": 4}, 4, "99999", "byte count"),
    ("header-length-not-a-number", {"shape": [1], "datatype": "FP32", "size": 4}, 4, "abc", "byte count"),
    ("size-not-an-integer", {"shape": [1], "datatype": "FP32", "size": "4"}, 4, None, "binary_data_size"),
    ("bytes-length-truncated", {"shape": [1], "datatype": "BYTES", "size": 2}, 2, None, "length"),
]


@pytest.mark.parametrize(
    ("tensor", "tail", "header", "words"), [c[1:] for c in BAD_BINARY], ids=[c[0] for c in BAD_BINARY]
)
def test_bad_binary_tensor_requests_get_400(
    server: RuntimeProcess, tensor: dict, tail: int, header: str | None, words: str
) -> None:
    body, headers = _binary_body(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": tensor["shape"],
                    "datatype": tensor["datatype"],
                    "parameters": {"binary_data_size": tensor["size"]},
                }
            ]
        },
        b"\0" * tail,
    )
    if header is not None:
        headers["Inference-Header-Content-Length"] = header
    response = server.client.post("/v2/models/mnist/infer", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert words.lower() in response.json()["error"].lower()
