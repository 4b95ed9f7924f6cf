"""``image_classifier``: images (bytes, base64 strings) or tensors in, top classes out."""

from __future__ import annotations

import io
import sys
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from . import transforms
from .base import BaseHandler, decode_base64, row_payload, stack_rows, to_tensor


class VisionHandler(BaseHandler):
    """Decodes each row into a tensor with ``image_processing``; tensor-like rows pass as they are."""

    image_processing: Any = transforms.Compose([transforms.ToTensor()])
    # v2 metadata before the first request: encoded images (base64 BYTES), one per row.
    input_metadata: list[dict[str, Any]] = [{"name": "input-0", "datatype": "BYTES", "shape": [-1]}]

    def initialize(self, context: Any) -> None:
        super().initialize(context)
        if not context.system_properties.get("limit_max_image_pixels", True):
            Image.MAX_IMAGE_PIXELS = None

    def open_image(self, value: bytes | bytearray | memoryview) -> Image.Image:
        try:
            image = Image.open(io.BytesIO(value))
            image.load()
        except UnidentifiedImageError:
            raise InputError("input is not an image in a format Pillow can read") from None
        except (OSError, Image.DecompressionBombError, SyntaxError, ValueError) as exc:
            raise InputError(f"input is not a decodable image: {exc}") from None
        return image

    def decode_row(self, value: Any) -> torch.Tensor:
        if isinstance(value, str):
            value = decode_base64(value)
        if isinstance(value, bytes | bytearray | memoryview):
            with self.open_image(value) as image:
                return self.image_processing(image)
        if value is None:
            raise InputError("input row has neither 'data' nor 'body'")
        return to_tensor(value)

    def preprocess(self, data: list[Any]) -> torch.Tensor:
        batch = self._preprocess_batched(data)
        if batch is not None:
            return batch.to(self.device)
        tensors = []
        for index, row in enumerate(data):
            try:
                tensors.append(self.decode_row(row_payload(row)))
            except InputError as exc:
                raise InputError(f"instance {index}: {exc.message}") from None
        return stack_rows(tensors).to(self.device)

    def _preprocess_batched(self, data: list[Any]) -> torch.Tensor | None:
        """The hot path for ``Compose([ToTensor(), Normalize(...)])`` (the MNIST example's): decode every
        8-bit image to pixels, then convert and normalise the whole batch in two tensor operations.
        Same operations as the transforms, so the same numbers. None when it does not apply."""
        plan = _batch_plan(self.image_processing)
        if plan is None:
            return None
        pixels = []
        for index, row in enumerate(data):
            value = row_payload(row)
            if isinstance(value, str):
                try:
                    value = decode_base64(value)
                except InputError as exc:
                    raise InputError(f"instance {index}: {exc.message}") from None
            if not isinstance(value, bytes | bytearray | memoryview):
                return None
            try:
                image = self.open_image(value)
            except InputError as exc:
                raise InputError(f"instance {index}: {exc.message}") from None
            with image:
                if image.mode not in ("L", "RGB"):
                    return None
                pixels.append(np.asarray(image))
        if any(p.shape != pixels[0].shape for p in pixels):
            return None
        batch = torch.from_numpy(np.stack(pixels))
        batch = batch.unsqueeze(1) if batch.ndim == 3 else batch.permute(0, 3, 1, 2).contiguous()
        batch = batch.to(torch.float32).div(255)
        for mean, std in plan:
            if len(mean) not in (1, batch.shape[1]):
                return None
            batch.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
        return batch


_PLANS: dict[int, tuple[Any, list[tuple[torch.Tensor, torch.Tensor]] | None]] = {}


def _transform_types() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """``(Compose, ToTensor, Normalize)`` classes the batch path knows: the runtime's own, plus
    torchvision's when a handler already imported it (never imported here: it costs a second)."""
    compose, to_tensor_, normalize = [transforms.Compose], [transforms.ToTensor], [transforms.Normalize]
    vision = sys.modules.get("torchvision.transforms")
    if vision is not None:
        compose.append(vision.Compose)
        to_tensor_.append(vision.ToTensor)
        normalize.append(vision.Normalize)
    return tuple(compose), tuple(to_tensor_), tuple(normalize)


def _batch_plan(processing: Any) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """``[(mean, std), ...]`` when ``processing`` is ToTensor followed only by Normalize steps."""
    cached = _PLANS.get(id(processing))
    if cached is not None and cached[0] is processing:
        return cached[1]
    compose, to_tensor_, normalize = _transform_types()
    steps = list(processing.transforms) if isinstance(processing, compose) else [processing]
    plan: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    if steps and type(steps[0]) in to_tensor_:
        rest = steps[1:]
        if all(type(step) in normalize for step in rest):
            plan = [
                (
                    torch.as_tensor(step.mean, dtype=torch.float32),
                    torch.as_tensor(step.std, dtype=torch.float32),
                )
                for step in rest
            ]
    _PLANS[id(processing)] = (processing, plan)
    return plan


class ImageClassifier(VisionHandler):
    """Softmax over the model's output; each answer maps the ``topk`` classes (names from
    ``index_to_name.json`` when present) to their probabilities."""

    topk = 5
    image_processing: Any = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )

    def set_max_result_classes(self, topk: int) -> None:
        self.topk = topk

    def get_max_result_classes(self) -> int:
        return self.topk

    def postprocess(self, data: torch.Tensor) -> list[dict[str, float]]:
        probabilities = torch.softmax(data, dim=1)
        k = min(self.topk, probabilities.shape[1])
        top_p, top_i = torch.topk(probabilities, k, dim=1)
        return [
            {self.label(index): prob for index, prob in zip(indices, probs, strict=True)}
            for indices, probs in zip(top_i.tolist(), top_p.tolist(), strict=True)
        ]

    def label(self, index: int) -> str:
        """The class name from ``index_to_name.json`` (``"3": "cat"`` or ``"3": ["n0212", "cat"]``)."""
        name = (self.mapping or {}).get(str(index), index)
        if isinstance(name, list) and name:
            name = name[-1]
        return str(name)
