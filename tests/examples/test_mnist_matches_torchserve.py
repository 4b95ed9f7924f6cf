"""TorchServe itself and our runtime give the same answers for the MNIST example's weights.

One archive, laid out as TorchServe's own MNIST example is (``--model-file`` with the network,
``--serialized-file`` with the state_dict, ``--handler`` a subclass of TorchServe's ``ImageClassifier``),
packed by the real ``torch-model-archiver``, with the example's weights. TorchServe (the dev extra's
``torchserve``, on Java 17) and our runtime both serve it, both get every held-out digit as KServe v1
requests, and both must answer with the same digit for each.

TorchServe is started as bench/ starts it (``serving_bench.torchserve_server``): its own process group,
loopback ports chosen free, its working directory, logs and pid file in a temp dir. Stopping it must leave
no process of that group behind.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "bench"))

import serving_bench  # noqa: E402
import serving_env  # noqa: E402
import serving_procs  # noqa: E402

# The dev extra installs torchserve and torch-model-archiver beside this interpreter: the folder that
# serving_env's TORCH_ISVC_TS_BIN_DIR names (python, torchserve, torch-model-archiver).
DEV_BIN_DIR = Path(sys.executable).parent
BATCH = 100  # instances per v1 request
MIN_ACCURACY = 0.97


@pytest.fixture(scope="module")
def torchserve(
    torchserve_layout_store: Path, tmp_path_factory: pytest.TempPathFactory, mnist_request: bytes
) -> Iterator[serving_procs.Server]:
    if shutil.which("java") is None:
        pytest.fail("TorchServe needs Java 17 on PATH")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(serving_env, "TS_BIN_DIR", str(DEV_BIN_DIR))
        server = serving_bench.torchserve_server(
            "torchserve", tmp_path_factory.mktemp("ts-run"), torchserve_layout_store / "model-store", env={}
        )
    try:
        server.start()
        server.wait_first_answer("/v1/models/mnist:predict", mnist_request, timeout=180)
        yield server
    finally:
        survivors = server.stop()
    assert survivors == [], f"TorchServe left processes behind: {survivors}"
    assert (server.cwd / "logs").is_dir()  # TorchServe's logs went to its temp working directory


@pytest.fixture(scope="module")
def mnist_request(mnist_data: ModuleType) -> bytes:
    return mnist_data.mnist_request_path().read_bytes()


def v1_predictions(url: str, body: bytes) -> list[int]:
    headers = {"content-type": "application/json"}
    response = httpx.post(f"{url}/v1/models/mnist:predict", content=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    return [int(digit) for digit in response.json()["predictions"]]


def test_the_archive_has_torchserves_example_layout(torchserve_layout_store: Path) -> None:
    import zipfile

    with zipfile.ZipFile(torchserve_layout_store / "model-store" / "mnist.mar") as mar:
        model = json.loads(mar.read("MAR-INF/MANIFEST.json"))["model"]
        handler_source = mar.read(model["handler"]).decode()
    assert (model["modelFile"], model["serializedFile"]) == ("mnist.py", "mnist_cnn.pt")
    assert "from ts.torch_handler.image_classifier import ImageClassifier" in handler_source


def test_torchserve_and_our_runtime_answer_the_same_digit_for_every_heldout_image(
    torchserve: serving_procs.Server,
    torchserve_layout_runtime: Any,
    mnist_data: ModuleType,
    heldout: tuple[np.ndarray, np.ndarray],
    mnist_request: bytes,
) -> None:
    ts_url, our_url = f"http://127.0.0.1:{torchserve.port}", torchserve_layout_runtime.url
    assert v1_predictions(ts_url, mnist_request) == v1_predictions(our_url, mnist_request) == [2]

    images, labels = heldout
    theirs: list[int] = []
    ours: list[int] = []
    for start in range(0, len(images), BATCH):
        body = json.dumps(mnist_data.v1_request(images[start : start + BATCH])).encode()
        theirs += v1_predictions(ts_url, body)
        ours += v1_predictions(our_url, body)

    assert len(theirs) == len(ours) == len(labels) == 2000
    disagreements = [i for i, (t, o) in enumerate(zip(theirs, ours, strict=True)) if t != o]
    assert disagreements == [], f"{len(disagreements)} answered differently, first {disagreements[:10]}"
    # Equal answers are only worth something when they are right: TorchServe reads our weights correctly.
    assert np.mean(np.asarray(theirs) == labels) >= MIN_ACCURACY
