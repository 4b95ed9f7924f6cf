"""Dynamic batching under concurrent load on the real MNIST example: distinct held-out digits sent at
once over v1, v2 and TorchServe's native API each come back with their own answer, never a 5xx.

The expected answer of every image is the model's own prediction computed here in-process (the same
weights and normalisation), so a mixed-up batch (answers swapped between requests) cannot pass.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from runtime_support import (
    ASSETS,
    MNIST_NET_FILES,
    REPO_ROOT,
    RuntimeProcess,
    build_archive,
    build_mnist_store,
    serving,
)
from support.modules import load_module

MNIST = REPO_ROOT / "examples" / "mnist"
MAX_BATCH = 16
CLIENTS = 32
IMAGES = 120


@pytest.fixture(scope="module")
def mnist_data() -> ModuleType:
    return load_module(MNIST / "data.py", "mnist_example_data_batching")


@pytest.fixture(scope="module")
def digits(mnist_data: ModuleType) -> tuple[np.ndarray, list[int]]:
    """Held-out images covering every class, and the model's in-process answer for each."""
    images, labels = mnist_data.heldout_split()
    picked = np.concatenate([np.flatnonzero(labels == d)[: IMAGES // 10] for d in range(10)])
    np.random.default_rng(7).shuffle(picked)
    net = load_module(MNIST / "mnist.py", "mnist_example_net_batching").Net()
    net.load_state_dict(torch.load(MNIST / "mnist_cnn.pt", map_location="cpu", weights_only=True))
    net.eval()
    with torch.inference_mode():
        expected = net(mnist_data.to_tensor(images[picked])).argmax(1).tolist()
    assert len(set(expected)) == 10  # distinct digits, so a swapped answer shows
    return images[picked], expected


def _archives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's own mnist.mar plus a probe archive (same model, reports batch sizes)."""
    root = build_mnist_store(tmp_path_factory.mktemp("mnist-store"))
    store = tmp_path_factory.mktemp("archives")
    shutil.copy(root / "model-store" / "mnist.mar", store / "mnist.mar")
    probe, extra = ASSETS / "mnist_batch_probe.py", [MNIST / "mnist_handler.py"]
    build_archive(store, "mnistprobe", handler=probe, extra_files=extra, **MNIST_NET_FILES)
    return store


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    """The two archives, batched by flags."""
    store = _archives(tmp_path_factory)
    yield from serving(RuntimeProcess(
        store, store / "runtime.log", "--batch-size", str(MAX_BATCH), "--max-batch-delay", "20"
    ))


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    """The same two archives with batchSize 1 (no config, no flags)."""
    store = _archives(tmp_path_factory)
    yield from serving(RuntimeProcess(store, store / "runtime.log", "--metrics-port", "0"))


def _ask(server: RuntimeProcess, model: str, protocol: int, png: bytes) -> tuple[int, object]:
    b64 = base64.b64encode(png).decode()
    if protocol == 0:
        response = server.client.post(f"/v1/models/{model}:predict", json={"instances": [{"data": b64}]})
        return response.status_code, response.json().get("predictions", [None])[0]
    if protocol == 1:
        body = {"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": [b64]}]}
        response = server.client.post(f"/v2/models/{model}/infer", json=body)
        outputs = response.json().get("outputs", [{"data": [None]}])
        return response.status_code, outputs[0]["data"][0]
    response = server.client.post(f"/predictions/{model}", content=png, headers={"content-type": "image/png"})
    return response.status_code, response.json()


def _ask_all_at_once(server: RuntimeProcess, model: str, pngs: list[bytes]) -> list[tuple[int, object]]:
    """Every image from CLIENTS threads at once, the protocols in turn (v1, v2, native): the answers
    in the images' order."""
    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(lambda i: _ask(server, model, i % 3, pngs[i]), range(len(pngs))))


@pytest.fixture(scope="module")
def pngs(mnist_data: ModuleType, digits: tuple[np.ndarray, list[int]]) -> list[bytes]:
    """The digits as PNG files, in order."""
    return [mnist_data.png_bytes(image) for image in digits[0]]


def test_concurrent_distinct_digits_each_get_their_own_answer_over_v1_v2_and_native(
    server: RuntimeProcess, pngs: list[bytes], digits: tuple[np.ndarray, list[int]]
) -> None:
    expected = digits[1]
    answers = _ask_all_at_once(server, "mnist", pngs)
    statuses = [status for status, _ in answers]
    assert statuses == [200] * len(pngs), [a for a in answers if a[0] != 200][:3]
    assert [int(answer) for _, answer in answers] == expected  # type: ignore[call-overload]


def test_the_same_digits_are_really_batched_and_still_answered_one_by_one(
    server: RuntimeProcess, pngs: list[bytes], digits: tuple[np.ndarray, list[int]]
) -> None:
    """The probe model shows the batches: requests shared handler calls, none above the maximum."""
    expected = digits[1]
    answers = _ask_all_at_once(server, "mnistprobe", pngs)
    assert [status for status, _ in answers] == [200] * len(pngs)
    # v2 carries a non-tensor answer as a BYTES element holding its JSON
    reports = [json.loads(answer) if isinstance(answer, str) else answer for _, answer in answers]
    assert [report["digit"] for report in reports] == expected
    rows = [report["batch_rows"] for report in reports]
    assert max(rows) <= MAX_BATCH
    assert max(rows) > 1, "no two concurrent requests shared a handler call"


def test_batch_size_one_merges_concurrent_requests_yet_postprocess_sees_one_request_at_a_time(
    default_server: RuntimeProcess, mnist_data: ModuleType, digits: tuple[np.ndarray, list[int]]
) -> None:
    """batchSize 1 and a handler adding only postprocess (the example's, the probe's): the
    built-in steps take the requests waiting together, the handler's own postprocess one request."""
    images, expected = digits
    pngs = [mnist_data.png_bytes(image) for image in images]
    for model in ("mnist", "mnistprobe"):
        answers = _ask_all_at_once(default_server, model, pngs)
        assert [status for status, _ in answers] == [200] * len(pngs), [a for a in answers if a[0] != 200][:3]
        reports = [json.loads(a) if isinstance(a, str) else a for _, a in answers]
        if model == "mnist":
            assert [int(report) for report in reports] == expected  # type: ignore[call-overload]
        else:
            assert [report["digit"] for report in reports] == expected
            assert {report["batch_rows"] for report in reports} == {1}
    metrics = default_server.client.get("/metrics").text
    calls = {
        line.split('le="', 1)[1].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("isvc_batch_size_bucket{") and 'model="mnistprobe"' in line
    }
    assert calls["1.0"] < calls["+Inf"], "no two concurrent requests shared a handler call"
