"""The runtime's torch-only transforms give torchvision's exact numbers, and the batch path knows both."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from isvc_runtime.handlers import transforms as ours
from isvc_runtime.handlers.image_classifier import ImageClassifier, VisionHandler, _batch_plan
from PIL import Image
from torchvision import transforms as tv


def _image(mode: str, size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    width, height = size
    if mode == "RGB":
        return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
    if mode == "RGBA":
        return Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA")
    if mode == "F":
        return Image.fromarray(rng.standard_normal((height, width)).astype(np.float32), "F")
    if mode == "I":
        return Image.fromarray(rng.integers(-(2**20), 2**20, (height, width), dtype=np.int32), "I")
    grey = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), "L")
    return grey if mode == "L" else grey.convert(mode)


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a, b)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "1", "P", "I", "F", "I;16"])
def test_to_tensor_of_images_equals_torchvision(mode: str) -> None:
    image = _image(mode, (13, 7), seed=1)
    _same(ours.ToTensor()(image), tv.ToTensor()(image))


@pytest.mark.parametrize(
    "array",
    [
        np.arange(35, dtype=np.uint8).reshape(5, 7),
        np.arange(105, dtype=np.uint8).reshape(5, 7, 3),
        np.linspace(0, 1, 35, dtype=np.float32).reshape(5, 7),
        np.arange(70, dtype=np.int64).reshape(5, 7, 2),
    ],
)
def test_to_tensor_of_arrays_equals_torchvision(array: np.ndarray) -> None:
    _same(ours.ToTensor()(array), tv.ToTensor()(array))


@pytest.mark.parametrize(
    ("channels", "mean", "std"),
    [(1, (0.1307,), (0.3081,)), (3, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]), (3, (0.5,), (0.25,))],
)
def test_normalize_equals_torchvision(channels: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    tensor = torch.rand(channels, 9, 11, generator=torch.Generator().manual_seed(channels))
    before = tensor.clone()
    _same(ours.Normalize(mean, std)(tensor), tv.Normalize(mean, std)(tensor))
    _same(tensor, before)  # not in place unless asked
    batch = torch.rand(4, channels, 5, 5)
    _same(ours.Normalize(mean, std)(batch), tv.Normalize(mean, std)(batch))


def test_normalize_rejects_what_torchvision_rejects() -> None:
    with pytest.raises(TypeError):
        ours.Normalize((0.5,), (0.5,))(torch.zeros(1, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="zero"):
        ours.Normalize((0.5,), (0.0,))(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError):
        ours.Normalize((0.5,), (0.5,))(torch.zeros(2, 2))


@pytest.mark.parametrize("size", [(40, 30), (30, 40), (33, 33), (256, 300), (8, 5)])
@pytest.mark.parametrize("resize", [16, [16], (12, 20), 33])
def test_resize_equals_torchvision(size: tuple[int, int], resize: int | list[int] | tuple[int, int]) -> None:
    image = _image("RGB", size, seed=size[0])
    mine, theirs = ours.Resize(resize)(image), tv.Resize(resize)(image)
    assert mine.size == theirs.size
    _same(ours.ToTensor()(mine), tv.ToTensor()(theirs))


def test_resize_with_max_size_equals_torchvision() -> None:
    image = _image("L", (100, 20))
    mine, theirs = ours.Resize(10, max_size=30)(image), tv.Resize(10, max_size=30)(image)
    assert mine.size == theirs.size
    _same(ours.ToTensor()(mine), tv.ToTensor()(theirs))


@pytest.mark.parametrize("size", [(40, 30), (31, 29), (10, 10), (5, 12), (3, 4)])
@pytest.mark.parametrize("crop", [10, (7, 9), 12])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_center_crop_equals_torchvision(
    size: tuple[int, int], crop: int | tuple[int, int], mode: str
) -> None:
    image = _image(mode, size, seed=7)
    mine, theirs = ours.CenterCrop(crop)(image), tv.CenterCrop(crop)(image)
    assert mine.size == theirs.size
    _same(ours.ToTensor()(mine), tv.ToTensor()(theirs))


def test_image_classifier_pipeline_equals_torchvision_pipeline() -> None:
    pipeline = tv.Compose(
        [
            tv.Resize(256),
            tv.CenterCrop(224),
            tv.ToTensor(),
            tv.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    for size in ((320, 240), (500, 375), (200, 180)):
        image = _image("RGB", size, seed=size[1])
        _same(ImageClassifier.image_processing(image), pipeline(image))


def test_batch_path_recognises_runtime_and_torchvision_transforms() -> None:
    for module in (ours, tv):
        plan = _batch_plan(module.Compose([module.ToTensor(), module.Normalize((0.1307,), (0.3081,))]))
        assert plan is not None and len(plan) == 1
        _same(plan[0][0], torch.tensor([0.1307]))
        assert _batch_plan(module.ToTensor()) == []
        assert _batch_plan(module.Compose([module.Resize(28), module.ToTensor()])) is None
    assert _batch_plan(ours.Compose([tv.ToTensor(), ours.Normalize((0.5,), (0.5,))])) is not None


@pytest.mark.parametrize("module", [ours, tv])
def test_batch_path_gives_the_per_image_numbers(module: object) -> None:
    class Handler(VisionHandler):
        image_processing = module.Compose([module.ToTensor(), module.Normalize((0.1307,), (0.3081,))])  # type: ignore[attr-defined]

    handler = Handler()
    handler.device = torch.device("cpu")
    images = [_image("L", (28, 28), seed=s) for s in range(3)]
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append({"data": buffer.getvalue()})
    batch = handler.preprocess(encoded)
    expected = torch.stack([tv.Normalize((0.1307,), (0.3081,))(tv.ToTensor()(image)) for image in images])
    _same(batch, expected)
