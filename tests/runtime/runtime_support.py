"""Helpers for the runtime tests: the real server as a subprocess on a loopback port and archives built
with the real ``torch-model-archiver`` (both from tests/support/runtime.py), the quadrant images, and
Captum's own integrated gradients to hold explanations to."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image
from support.runtime import RuntimeProcess, build_archive, build_mnist_store, serving

__all__ = [
    "ASSETS",
    "MNIST_REQUEST",
    "REPO_ROOT",
    "SHARED_DIR",
    "RuntimeProcess",
    "build_archive",
    "build_mnist_store",
    "captum_attributions",
    "loaded_runner",
    "quadrant_png",
    "quadrant_tensor",
    "serving_mnist",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DIR = REPO_ROOT.parent / "shared"
MNIST_REQUEST = SHARED_DIR / "data" / "requests" / "v1" / "mnist.json"
ASSETS = Path(__file__).resolve().parent / "assets"


def asset_archive(store: Path, name: str, handler: str, model: str, weights: Path, **options: Any) -> Path:
    """An archive of a test handler and model file from tests/runtime/assets, with ``weights``."""
    return build_archive(
        store, name, handler=ASSETS / handler, model_file=ASSETS / model, serialized_file=weights, **options
    )
EXAMPLE_DIR = REPO_ROOT / "examples" / "mnist"
# build_archive's keywords for the example's network and trained weights
MNIST_NET_FILES = {"model_file": EXAMPLE_DIR / "mnist.py", "serialized_file": EXAMPLE_DIR / "mnist_cnn.pt"}


def quadrant_png(quadrant: int, *, mode: str = "L", size: int = 8) -> bytes:
    """A black image whose given quadrant is white: QuadrantNet answers ``quadrant``."""
    image = Image.new(mode, (size, size))
    half = size // 2
    left = half * (quadrant % 2)
    top = half * (quadrant // 2)
    white = 255 if mode == "L" else (255, 255, 255)
    for x in range(left, left + half):
        for y in range(top, top + half):
            image.putpixel((x, y), white)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def quadrant_tensor(quadrant: int) -> list[list[list[float]]]:
    """The same picture as a [1, 8, 8] nested list."""
    grid = [[0.0] * 8 for _ in range(8)]
    top, left = 4 * (quadrant // 2), 4 * (quadrant % 2)
    for y in range(top, top + 4):
        for x in range(left, left + 4):
            grid[y][x] = 1.0
    return [grid]


def captum_attributions(net: Any, x: Any, targets: list[int], n_steps: int) -> Any:
    """Captum's ``IntegratedGradients`` of ``net`` at ``x`` (zero baseline, default method), one target
    per row, as a numpy array: what the server's explanations are compared with."""
    import torch
    from captum.attr import IntegratedGradients

    attributions = IntegratedGradients(net).attribute(
        x, baselines=torch.zeros_like(x), target=targets, n_steps=n_steps
    )
    return attributions.detach().cpu().numpy()


@contextlib.contextmanager
def serving_mnist(tmp_dir: Path, max_request_size: int, *args: str) -> Iterator[RuntimeProcess]:
    """The MNIST example's seed store in ``tmp_dir`` served with ``max_request_size`` and ``args`` (the
    model also as ``torchserve``, as the operator starts it), ready; it must stop cleanly."""
    root = build_mnist_store(tmp_dir)
    with (root / "config" / "config.properties").open("a") as config:
        config.write(f"max_request_size={max_request_size}\n")
    yield from serving(RuntimeProcess(root, root / "runtime.log", "--model-name", "torchserve", *args))


def loaded_runner(handler: Any, settings: Any = None) -> Any:
    """A :class:`ModelRunner` of model ``m`` (``settings``, default: the defaults) holding ``handler`` as if
    its archive had loaded, with its merge plan."""
    from isvc_runtime.config import ModelSettings
    from isvc_runtime.context import Context
    from isvc_runtime.handler_metrics import HandlerMetrics
    from isvc_runtime.handlers.merging import merge_plan
    from isvc_runtime.loader import LoadedModel
    from isvc_runtime.runner import ModelRunner

    runner = ModelRunner("m", settings or ModelSettings())
    runner.set_loaded(
        LoadedModel(
            name="m",
            version="1.0",
            model_dir=Path("/nowhere"),
            manifest={},
            handler=handler,
            entry_point=handler.handle,
            context=Context("m", "/nowhere", {}, 1, None, HandlerMetrics("m")),
            model_yaml_config={},
            merge_plan=merge_plan(handler),
        )
    )
    return runner
