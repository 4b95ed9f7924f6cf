"""Explanations of the MNIST example over HTTP, from the real server, checked against Captum itself.

``f`` is the model's forward output for the target class (the example's Net returns log-softmax), as
Captum attributes it: the attributions of one digit sum to f(x) - f(baseline), baseline all zeros.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from runtime_support import MNIST_REQUEST, RuntimeProcess, build_mnist_store, captum_attributions


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    """The example's seed store, with batching on so concurrent explanations share a Captum call."""
    store = build_mnist_store(tmp_path_factory.mktemp("mnist-explain"))
    log = tmp_path_factory.mktemp("log") / "runtime.log"
    flags = ("--batch-size", "8", "--max-batch-delay", "30", "--model-name", "torchserve")
    with RuntimeProcess(store, log, *flags) as runtime:
        runtime.wait_ready()
        yield runtime


def explain(server: RuntimeProcess, body: Any, path: str = "/v1/models/mnist:explain") -> Any:
    response = server.client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_mnist_request_is_explained_with_the_inputs_shape(server: RuntimeProcess) -> None:
    response = server.client.post("/v1/models/mnist:explain", content=MNIST_REQUEST.read_bytes())
    assert response.status_code == 200, response.text
    explanations = np.asarray(response.json()["explanations"])
    assert explanations.shape == (1, 1, 28, 28)
    assert np.isfinite(explanations).all()
    assert np.abs(explanations).max() > 0


def test_mnist_explanation_is_captums_15_step_attribution_for_the_requests_target(
    server: RuntimeProcess, mnist: ModuleType, net: torch.nn.Module
) -> None:
    mnist_request = json.loads(MNIST_REQUEST.read_bytes())
    instance = mnist_request["instances"][0]
    x = mnist.to_tensor(mnist.decode_png_b64(instance["data"])[None])
    expected = captum_attributions(net, x, [instance["target"]], 15)
    ours = np.asarray(explain(server, mnist_request)["explanations"], dtype=np.float32)
    assert np.abs(ours - expected).max() < 1e-5


def test_attributions_are_complete_and_match_captum_for_20_heldout_digits(
    server: RuntimeProcess, mnist: ModuleType, net: torch.nn.Module
) -> None:
    images, labels = mnist.heldout_split()
    images, labels = images[:20], labels[:20]
    body = {"instances": [{"data": mnist.png_b64(image)} for image in images], "parameters": {"n_steps": 200}}
    ours = np.asarray(explain(server, body)["explanations"], dtype=np.float32)
    assert ours.shape == (20, 1, 28, 28)

    x = mnist.to_tensor(images)
    with torch.no_grad():
        f_x, f_baseline = net(x), net(torch.zeros_like(x))
    predicted = f_x.argmax(dim=1).tolist()  # no target sent: each digit is explained for its prediction
    assert np.mean(np.asarray(predicted) == labels) >= 0.9
    for i, target in enumerate(predicted):
        difference = (f_x[i, target] - f_baseline[i, target]).item()
        assert abs(ours[i].sum() - difference) <= 0.01 * abs(difference), (i, ours[i].sum(), difference)
    assert np.abs(ours - captum_attributions(net, x, predicted, 200)).max() < 1e-5


def test_each_instance_is_explained_for_its_own_target(
    server: RuntimeProcess, mnist: ModuleType, net: torch.nn.Module
) -> None:
    images, _ = mnist.heldout_split()
    digit = images[19]  # a "2"
    targets = [2, 7, 0]
    body = {"instances": [{"data": mnist.png_b64(digit), "target": t} for t in targets]}
    ours = np.asarray(explain(server, body)["explanations"], dtype=np.float32)
    x = mnist.to_tensor(np.stack([digit] * 3))
    expected = captum_attributions(net, x, targets, 15)
    assert np.abs(ours - expected).max() < 1e-5
    assert np.abs(ours[0] - ours[1]).max() > 1e-3 and np.abs(ours[1] - ours[2]).max() > 1e-3
    # v1's parameters.target names the target of instances that have none of their own
    body = {"instances": [{"data": mnist.png_b64(digit)}, {"data": mnist.png_b64(digit), "target": 0}]}
    body["parameters"] = {"target": 7}
    ours = np.asarray(explain(server, body)["explanations"], dtype=np.float32)
    assert np.abs(ours - expected[1:]).max() < 1e-5


def test_v2_explain_returns_an_fp32_explanation_tensor(
    server: RuntimeProcess, mnist: ModuleType, net: torch.nn.Module
) -> None:
    images, _ = mnist.heldout_split()
    body = mnist.v2_bytes_request(images[:2])
    body["id"] = "explain-1"
    body["parameters"] = {"target": [4, 9], "n_steps": 30, "method": "riemann_trapezoid"}
    answer = explain(server, body, "/v2/models/mnist/explain")
    assert answer["model_name"] == "mnist" and answer["id"] == "explain-1"
    [output] = answer["outputs"]
    assert output["name"] == "explanation" and output["datatype"] == "FP32"
    assert output["shape"] == [2, 1, 28, 28]
    ours = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
    expected = IntegratedGradients(net).attribute(
        mnist.to_tensor(images[:2]), target=[4, 9], n_steps=30, method="riemann_trapezoid"
    )
    assert np.abs(ours - expected.detach().numpy()).max() < 1e-5
    # an FP32 tensor input is explained the same way
    tensor_body = mnist.v2_fp32_request(images[:2])
    tensor_body["parameters"] = body["parameters"]
    again = explain(server, tensor_body, "/v2/models/mnist/explain")["outputs"][0]
    assert np.abs(np.asarray(again["data"], dtype=np.float32) - ours.ravel()).max() < 1e-5


def test_concurrent_explanations_each_get_their_own_answer(
    server: RuntimeProcess, mnist: ModuleType, net: torch.nn.Module
) -> None:
    images, _ = mnist.heldout_split()
    requests = [(images[i], i % 10, 10 + 5 * (i % 2)) for i in range(8)]  # two n_steps in the mix

    def one(item: tuple[np.ndarray, int, int]) -> np.ndarray:
        image, target, n_steps = item
        body = {"instances": [{"data": mnist.png_b64(image), "target": target}]}
        body["parameters"] = {"n_steps": n_steps}
        return np.asarray(explain(server, body)["explanations"], dtype=np.float32)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, requests))
    for (image, target, n_steps), ours in zip(requests, answers, strict=True):
        expected = captum_attributions(net, mnist.to_tensor(image[None]), [target], n_steps)
        assert np.abs(ours - expected).max() < 1e-5


def test_health_answers_while_a_long_explanation_runs(server: RuntimeProcess, mnist: ModuleType) -> None:
    images, _ = mnist.heldout_split()
    body = {"instances": [{"data": mnist.png_b64(image)} for image in images[:4]]}
    body["parameters"] = {"n_steps": 300}  # 1,200 forward and backward passes: seconds on one core
    finished: list[float] = []

    def long_explanation() -> None:
        explain(server, body)
        finished.append(time.monotonic())

    worker = threading.Thread(target=long_explanation)
    worker.start()
    time.sleep(0.3)
    live = server.client.get("/v2/health/live", timeout=5)
    answered = time.monotonic()
    worker.join(120)
    assert live.status_code == 200
    assert finished and answered < finished[0], "health waited for the explanation"


BAD_REQUESTS = [
    ("unknown model v1", "/v1/models/nope:explain", {"instances": [[0.0]]}, 404, "not served"),
    ("unknown model v2", "/v2/models/nope/explain", {"inputs": []}, 404, "not served"),
    ("target out of range", None, {"instances": [{"data": "SEED", "target": 10}]}, 400, "out of range"),
    ("negative target", None, {"instances": [{"data": "SEED", "target": -1}]}, 400, "target"),
    ("target not a number", None, {"instances": [{"data": "SEED", "target": "two"}]}, 400, "target"),
    (
        "n_steps over the bound",
        None,
        {"instances": ["SEED"], "parameters": {"n_steps": 1001}},
        400,
        "n_steps",
    ),
    ("n_steps zero", None, {"instances": ["SEED"], "parameters": {"n_steps": 0}}, 400, "n_steps"),
    ("n_steps a string", None, {"instances": ["SEED"], "parameters": {"n_steps": "15"}}, 400, "n_steps"),
    ("unknown method", None, {"instances": ["SEED"], "parameters": {"method": "simpson"}}, 400, "method"),
    (
        "internal batch over the bound",
        None,
        {"instances": ["SEED"], "parameters": {"internal_batch_size": 100000}},
        400,
        "internal_batch_size",
    ),
    ("parameters not an object", None, {"instances": ["SEED"], "parameters": "fast"}, 400, "parameters"),
    ("too much work", None, {"instances": ["SEED"] * 101, "parameters": {"n_steps": 1000}}, 400, "limit"),
    ("text, not base64", None, {"instances": [{"data": "not an image!"}]}, 400, "base64"),
    ("base64, not an image", None, {"instances": [{"data": "aGVsbG8gd29ybGQ="}]}, 400, "image"),
    ("numbers of the wrong shape", None, {"instances": [[1.0, 2.0, 3.0]]}, 400, "rejected"),
    ("no instances", None, {"predict": []}, 400, "instances"),
    (
        "v2 targets for the wrong count",
        "/v2/models/mnist/explain",
        {
            "inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["SEED"]}],
            "parameters": {"target": [1, 2]},
        },
        400,
        "2 entries for 1 instances",
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_explain_requests_get_json_errors_and_the_server_keeps_serving(
    server: RuntimeProcess, path: str | None, body: Any, status: int, message: str
) -> None:
    mnist_request = json.loads(MNIST_REQUEST.read_bytes())
    png = mnist_request["instances"][0]["data"]
    text = json.dumps(body).replace('"SEED"', json.dumps(png))
    response = server.client.post(
        path or "/v1/models/mnist:explain", content=text, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert server.client.post("/v1/models/mnist:explain", json=mnist_request).status_code == 200


def test_explain_routes_answer_only_post(server: RuntimeProcess) -> None:
    assert server.client.get("/v2/models/mnist/explain").status_code == 405
    response = server.client.post("/v1/models/mnist:explain", content=b"{not json")
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]


def test_explain_is_served_under_the_inferenceservice_name_too(server: RuntimeProcess) -> None:
    response = server.client.post("/v1/models/torchserve:explain", content=MNIST_REQUEST.read_bytes())
    assert response.status_code == 200, response.text
    assert np.asarray(response.json()["explanations"]).shape == (1, 1, 28, 28)
