"""Fixtures for the KServe compatibility tests: the MNIST example's store and held-out digits, the answers
of the in-process model, a runtime serving the store on loopback, and the clients' interpreter."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from clients_harness import ISVC, clients_python, runtime_accepts
from support.runtime import RuntimeProcess, build_mnist_store

from e2e.processes import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = REPO_ROOT / "examples" / "mnist"
# The example's scripts import each other by plain name (``from data import ...``), as they do when run.
if str(EXAMPLE_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLE_DIR))
DIGITS = 200  # held-out digits every client classifies


@pytest.fixture(scope="session")
def kserve_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_mnist_store(tmp_path_factory.mktemp("kserve-compat-store"))


@pytest.fixture(scope="session")
def digit_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The first 200 held-out digits as the clients read them: ``fp32`` (a ``.npy`` of the normalised
    ``float32 [N, 1, 28, 28]`` model input) and ``pngs`` (a JSON list of base64 PNGs)."""
    from data import heldout_split, png_b64, to_tensor

    images = heldout_split()[0][:DIGITS]
    out = tmp_path_factory.mktemp("digits")
    np.save(out / "fp32.npy", to_tensor(images).numpy())
    (out / "pngs.json").write_text(json.dumps([png_b64(image) for image in images]))
    return {"fp32": out / "fp32.npy", "pngs": out / "pngs.json"}


@pytest.fixture(scope="session")
def in_process_classes(digit_files: dict[str, Path]) -> list[int]:
    """What the example's network answers for those digits, run here in this process."""
    from mnist import Net

    model = Net()
    model.load_state_dict(torch.load(EXAMPLE_DIR / "mnist_cnn.pt", map_location="cpu", weights_only=True))
    with torch.inference_mode():
        logits = model.eval()(torch.from_numpy(np.load(digit_files["fp32"])))
    return [int(c) for c in logits.argmax(dim=1)]


@pytest.fixture(scope="session")
def grpc_port() -> int:
    """The runtime's gRPC port (``--grpc-port``, once it has one; until then nothing listens there)."""
    return free_port()


@pytest.fixture(scope="session")
def compat_runtime(
    kserve_store: Path, grpc_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RuntimeProcess]:
    """The store served as the seed's InferenceService would be: the model also under the isvc's name."""
    extra = ["--grpc-port", str(grpc_port)] if runtime_accepts("--grpc-port", str(grpc_port)) else []
    log = tmp_path_factory.mktemp("compat-runtime") / "runtime.log"
    runtime = RuntimeProcess(kserve_store, log, "--model-name", ISVC, *extra)
    try:
        runtime.wait_ready(timeout=120)
        yield runtime
    finally:
        runtime.stop(timeout=20)


@pytest.fixture(scope="session")
def clients_py() -> Path:
    return clients_python()
