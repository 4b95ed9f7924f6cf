"""The runtime on a CUDA GPU: the model lands on ``cuda:<gpu_id>``, and its answers match the CPU's.

These tests run only where ``torch.cuda.is_available()`` (``bench/device_check.sh`` on a GPU machine);
anywhere else each one is reported as skipped, never as passed.

Tolerances. cuDNN runs convolutions in TF32 by default (``torch.backends.cudnn.allow_tf32``; Ampere
and newer): 10 mantissa bits per product instead of 23. Rounding the example's convolution operands to
TF32 on the CPU moves its log-softmax outputs by up to 1.3e-2 (the smallest top-1/top-2 margin over the
first 200 held-out digits is 1.4, so every prediction stays the same) and its 200-step attributions by
up to 1.3% of each digit's largest attribution (9e-4 absolute). The server as deployed is held to
bounds a few times those. With TF32 off (``NVIDIA_TF32_OVERRIDE=0`` for cuDNN and cuBLAS, or
``torch.backends.cudnn.allow_tf32 = False`` in-process) both sides compute in FP32 and differ only
in summation order (~1e-6 relative); 1e-4 absolute (5e-4 of the largest attribution, 1e-4 of a
log-probability) leaves room for that and is ten times below what TF32 alone causes, so a TF32 or
device mix-up cannot pass.

``$TORCH_ISVC_MNIST_STORE`` names a prebuilt seed store (the device run carries one); without it the
example's own script builds one, as the other runtime tests do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from runtime_support import REPO_ROOT, RuntimeProcess, build_mnist_store, captum_attributions

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU (torch.cuda.is_available() is False); bench/device_check.sh runs these",
)

CUDA0 = torch.device("cuda", 0)
DIGITS = 200  # held-out digits compared for predictions
EXPLAINED = 20  # held-out digits explained, n_steps=200 (the completeness test's setting)
N_STEPS = 200
TF32_LOGITS_ATOL = 0.05  # ~4x the emulated TF32 drift of 1.3e-2
TF32_ATTRIBUTION_RTOL = 0.05  # of each digit's largest |attribution|; ~4x the emulated 1.3%
FP32_ATOL = 1e-4


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    prebuilt = os.environ.get("TORCH_ISVC_MNIST_STORE")
    if prebuilt:
        return Path(prebuilt)
    return build_mnist_store(tmp_path_factory.mktemp("mnist-cuda"))


@pytest.fixture(scope="module")
def heldout(mnist: ModuleType) -> tuple[np.ndarray, np.ndarray]:
    images, labels = mnist.heldout_split()
    return images[:DIGITS], labels[:DIGITS]


@pytest.fixture(scope="module")
def cpu_logits(
    mnist: ModuleType, net: torch.nn.Module, heldout: tuple[np.ndarray, np.ndarray]
) -> torch.Tensor:
    with torch.no_grad():
        return net(mnist.to_tensor(heldout[0]))


def loaded_runner(store: Path, work: Path, *, gpu_id: int | None = None) -> Any:
    """The store's model loaded in this process as ``python -m isvc_runtime`` loads it; ``gpu_id``
    overrides the GPU the registry assigned."""
    from isvc_runtime.model_store import discover
    from isvc_runtime.registry import load_prepared, prepare_models
    from isvc_runtime.server import gpu_count

    config, sources = discover(store, env={})
    registry, prepared = prepare_models(sources, config, work_dir=work, gpu_count=gpu_count())
    if gpu_id is not None:
        prepared[0].gpu_id = gpu_id
    load_prepared(prepared)
    return registry.get("mnist")


@pytest.fixture(scope="module")
def runner(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    loaded = loaded_runner(store, tmp_path_factory.mktemp("in-process"))
    assert loaded.ready, loaded.error
    return loaded


def serve(
    store: Path, tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]
) -> Iterator[RuntimeProcess]:
    log = tmp_path_factory.mktemp("log") / "runtime.log"
    with RuntimeProcess(store, log, "--batch-size", "8", "--max-batch-delay", "10", env=env) as runtime:
        runtime.wait_ready()
        yield runtime


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    """The server as deployed on a GPU machine: no settings, cuDNN's defaults (TF32 convolutions)."""
    yield from serve(store, tmp_path_factory, {})


@pytest.fixture(scope="module")
def fp32_server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    """The same server with TF32 off in cuDNN and cuBLAS (NVIDIA's switch, read by the libraries)."""
    yield from serve(store, tmp_path_factory, {"NVIDIA_TF32_OVERRIDE": "0"})


def post(server: RuntimeProcess, path: str, body: Any) -> Any:
    response = server.client.post(path, json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


# ----------------------------------------------------------------------------------- placement


def test_the_runtime_counts_every_visible_gpu() -> None:
    from isvc_runtime.server import gpu_count

    assert gpu_count() == torch.cuda.device_count() > 0


def test_the_model_is_placed_on_cuda_at_its_gpu_id(runner: Any) -> None:
    assert runner.model.context.system_properties["gpu_id"] == 0
    handler = runner.handler
    assert handler.device == CUDA0
    tensors = [*handler.model.parameters(), *handler.model.buffers()]
    assert tensors and {t.device for t in tensors} == {CUDA0}


def test_preprocessed_images_reach_the_gpu_and_the_logits_match_the_cpu(
    runner: Any, mnist: ModuleType, heldout: tuple[np.ndarray, np.ndarray], cpu_logits: torch.Tensor
) -> None:
    handler = runner.handler
    inputs = handler.preprocess([{"data": mnist.png_bytes(image)} for image in heldout[0]])
    assert inputs.device == CUDA0
    logits = handler.inference(inputs)
    assert logits.device == CUDA0
    assert (logits.cpu() - cpu_logits).abs().max().item() < TF32_LOGITS_ATOL
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        fp32 = handler.inference(inputs).cpu()
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    assert (fp32 - cpu_logits).abs().max().item() < FP32_ATOL


def test_a_gpu_id_beyond_the_device_count_fails_that_model_with_a_clear_error(
    store: Path, tmp_path: Path
) -> None:
    beyond = torch.cuda.device_count()
    failed = loaded_runner(store, tmp_path, gpu_id=beyond)
    assert not failed.ready
    assert failed.error and "device" in failed.error.lower(), failed.error


def test_an_empty_cuda_visible_devices_keeps_the_runtime_on_the_cpu() -> None:
    probe = "from isvc_runtime.server import gpu_count; print(gpu_count())"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
    )
    assert out.stdout.strip() == "0", out.stderr


# ----------------------------------------------------------------------------------- answers


def test_cuda_predictions_equal_cpu_predictions_for_200_heldout_digits(
    server: RuntimeProcess,
    mnist: ModuleType,
    heldout: tuple[np.ndarray, np.ndarray],
    cpu_logits: torch.Tensor,
) -> None:
    images, labels = heldout
    expected = cpu_logits.argmax(dim=1).tolist()
    assert np.mean(np.asarray(expected) == labels) >= 0.95
    v1 = post(server, "/v1/models/mnist:predict", mnist.v1_request(images))
    assert v1["predictions"] == expected
    v2 = post(server, "/v2/models/mnist/infer", mnist.v2_fp32_request(images[:EXPLAINED]))
    assert [int(v) for v in v2["outputs"][0]["data"]] == expected[:EXPLAINED]
    mnist_request = json.loads(mnist.mnist_request_path().read_bytes())
    assert post(server, "/v1/models/mnist:predict", mnist_request) == {"predictions": [2]}


def explained(server: RuntimeProcess, mnist: ModuleType, images: np.ndarray) -> np.ndarray:
    body = {
        "instances": [{"data": mnist.png_b64(image)} for image in images],
        "parameters": {"n_steps": N_STEPS},
    }
    ours = np.asarray(post(server, "/v1/models/mnist:explain", body)["explanations"], dtype=np.float32)
    assert ours.shape == (len(images), 1, 28, 28)
    assert np.isfinite(ours).all()
    return ours


def assert_complete(ours: np.ndarray, net: torch.nn.Module, x: torch.Tensor, targets: list[int]) -> None:
    """Completeness: each digit's attributions sum to f(x) - f(baseline) within 1%."""
    with torch.no_grad():
        f_x, f_baseline = net(x), net(torch.zeros_like(x))
    for i, target in enumerate(targets):
        difference = (f_x[i, target] - f_baseline[i, target]).item()
        assert abs(ours[i].sum() - difference) <= 0.01 * abs(difference), (i, ours[i].sum(), difference)


def complete_explanations_and_captums(
    server: RuntimeProcess,
    mnist: ModuleType,
    net: torch.nn.Module,
    heldout: tuple[np.ndarray, np.ndarray],
    cpu_logits: torch.Tensor,
) -> tuple[np.ndarray, np.ndarray]:
    """The server's attributions of the first held-out digits (checked complete) and Captum's on the
    CPU for the same digits and targets (no target sent: each digit's CPU prediction)."""
    images = heldout[0][:EXPLAINED]
    targets = cpu_logits[:EXPLAINED].argmax(dim=1).tolist()
    ours = explained(server, mnist, images)
    x = mnist.to_tensor(images)
    assert_complete(ours, net, x, targets)
    return ours, captum_attributions(net, x, targets, N_STEPS)


def test_cuda_explanations_are_complete_and_near_captum_on_the_cpu(
    server: RuntimeProcess,
    mnist: ModuleType,
    net: torch.nn.Module,
    heldout: tuple[np.ndarray, np.ndarray],
    cpu_logits: torch.Tensor,
) -> None:
    ours, expected = complete_explanations_and_captums(server, mnist, net, heldout, cpu_logits)
    for i in range(EXPLAINED):
        scale = np.abs(expected[i]).max()
        assert np.abs(ours[i] - expected[i]).max() <= TF32_ATTRIBUTION_RTOL * scale, i


def test_cuda_explanations_without_tf32_match_captum_on_the_cpu_to_1e_4(
    fp32_server: RuntimeProcess,
    mnist: ModuleType,
    net: torch.nn.Module,
    heldout: tuple[np.ndarray, np.ndarray],
    cpu_logits: torch.Tensor,
) -> None:
    ours, expected = complete_explanations_and_captums(fp32_server, mnist, net, heldout, cpu_logits)
    difference = np.abs(ours - expected).max()
    assert difference < FP32_ATOL, f"{difference:.2e}: is TF32 still on (NVIDIA_TF32_OVERRIDE=0 ignored)?"
