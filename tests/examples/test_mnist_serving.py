"""The MNIST example served by the real runtime process over HTTP: the seed's answer, v2 tensors and
images, held-out accuracy through the API, and an archive whose handler subclasses TorchServe's own."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pytest

BATCH = 50  # instances per request in the accuracy runs
MIN_ACCURACY = 0.97


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def request_digit(mnist_data: ModuleType) -> np.ndarray:
    """The seed request's "2" as a ``[1, 28, 28]`` uint8 batch."""
    mnist_request = json.loads(mnist_data.mnist_request_path().read_text())
    return mnist_data.decode_png_b64(mnist_request["instances"][0]["data"])[None]


def v2_classes(response: httpx.Response, expected_rows: int) -> list[int]:
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["shape"] == [expected_rows]
    return [int(c) for c in output["data"]]


def assert_the_mnist_request_predicts_2(client: httpx.Client, url: str, mnist_data: ModuleType) -> None:
    """The walkthrough's v1 request file (a PNG of a 2) posted as it is to ``url``."""
    content = mnist_data.mnist_request_path().read_bytes()
    response = client.post(url, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [2]}


@pytest.mark.parametrize("model_name", ["mnist", "torchserve"])
def test_the_mnist_request_file_predicts_2(
    mnist_runtime: Any, client: httpx.Client, mnist_data: ModuleType, model_name: str
) -> None:
    url = f"{mnist_runtime.url}/v1/models/{model_name}:predict"
    assert_the_mnist_request_predicts_2(client, url, mnist_data)


def test_v2_infer_with_the_request_digit_as_bytes_png_returns_2(
    mnist_runtime: Any, client: httpx.Client, mnist_data: ModuleType, request_digit: np.ndarray
) -> None:
    response = client.post(
        f"{mnist_runtime.url}/v2/models/mnist/infer", json=mnist_data.v2_bytes_request(request_digit)
    )
    assert v2_classes(response, 1) == [2]
    assert response.json()["model_name"] == "mnist"
    assert response.json()["model_version"] == "1.0"


def test_v2_infer_with_the_request_digit_as_fp32_tensor_returns_2(
    mnist_runtime: Any, client: httpx.Client, mnist_data: ModuleType, request_digit: np.ndarray
) -> None:
    body = mnist_data.v2_fp32_request(request_digit)
    assert body["inputs"][0]["shape"] == [1, 1, 28, 28]
    response = client.post(f"{mnist_runtime.url}/v2/models/mnist/infer", json=body)
    assert v2_classes(response, 1) == [2]


def test_torchserve_native_predictions_with_a_raw_png_returns_the_digit(
    mnist_runtime: Any, client: httpx.Client, mnist_data: ModuleType, request_digit: np.ndarray
) -> None:
    response = client.post(
        f"{mnist_runtime.url}/predictions/mnist", content=mnist_data.png_bytes(request_digit[0])
    )
    assert response.status_code == 200, response.text
    assert response.json() == 2


def heldout_accuracy(
    heldout: tuple[np.ndarray, np.ndarray], predict_batch: Callable[[np.ndarray], list[int]]
) -> float:
    images, labels = heldout
    predicted: list[int] = []
    for start in range(0, len(images), BATCH):
        batch = images[start : start + BATCH]
        classes = predict_batch(batch)
        assert len(classes) == len(batch)
        predicted += classes
    return float((np.asarray(predicted) == labels).mean())


def test_heldout_accuracy_through_v1_predict_batches_is_at_least_97_percent(
    mnist_runtime: Any, client: httpx.Client, mnist_data: ModuleType, heldout: tuple
) -> None:
    def predict(batch: np.ndarray) -> list[int]:
        response = client.post(
            f"{mnist_runtime.url}/v1/models/mnist:predict", json=mnist_data.v1_request(batch)
        )
        assert response.status_code == 200, response.text
        return [int(c) for c in response.json()["predictions"]]

    assert heldout_accuracy(heldout, predict) >= MIN_ACCURACY


@pytest.mark.parametrize("encoding", ["v2_bytes_request", "v2_fp32_request"])
def test_heldout_accuracy_through_v2_infer_batches_is_at_least_97_percent(
    mnist_runtime: Any, client: httpx.Client, mnist_data: ModuleType, heldout: tuple, encoding: str
) -> None:
    make_request = getattr(mnist_data, encoding)

    def predict(batch: np.ndarray) -> list[int]:
        response = client.post(f"{mnist_runtime.url}/v2/models/mnist/infer", json=make_request(batch))
        return v2_classes(response, len(batch))

    assert heldout_accuracy(heldout, predict) >= MIN_ACCURACY


def test_archive_with_a_handler_subclassing_torchserves_image_classifier_serves_correct_digits(
    torchserve_layout_runtime: Any, client: httpx.Client, mnist_data: ModuleType, heldout: tuple
) -> None:
    url = torchserve_layout_runtime.url
    assert_the_mnist_request_predicts_2(client, f"{url}/v1/models/mnist:predict", mnist_data)

    images, labels = heldout[0][:200], heldout[1][:200]
    response = client.post(f"{url}/v1/models/mnist:predict", json=mnist_data.v1_request(images))
    assert response.status_code == 200, response.text
    assert np.mean(np.asarray(response.json()["predictions"]) == labels) >= MIN_ACCURACY
