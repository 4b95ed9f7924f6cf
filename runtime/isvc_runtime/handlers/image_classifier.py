"""``image_classifier``: images (bytes, base64 strings) or tensors in, top classes out."""

from __future__ import annotations

import io
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torchvision import transforms

from ..errors import InputError
from .base import BaseHandler, decode_base64, row_payload, stack_rows, to_tensor


class VisionHandler(BaseHandler):
    """Decodes each row into a tensor with ``image_processing``; tensor-like rows pass as they are."""

    image_processing: Any = transforms.Compose([transforms.ToTensor()])

    def initialize(self, context: Any) -> None:
        super().initialize(context)
        if not context.system_properties.get("limit_max_image_pixels", True):
            Image.MAX_IMAGE_PIXELS = None

    def decode_row(self, value: Any) -> torch.Tensor:
        if isinstance(value, str):
            value = decode_base64(value)
        if isinstance(value, bytes | bytearray | memoryview):
            try:
                with Image.open(io.BytesIO(value)) as image:
                    image.load()
                    return self.image_processing(image)
            except UnidentifiedImageError:
                raise InputError("input is not an image in a format Pillow can read") from None
            except (OSError, Image.DecompressionBombError, SyntaxError, ValueError) as exc:
                raise InputError(f"input is not a decodable image: {exc}") from None
        if value is None:
            raise InputError("input row has neither 'data' nor 'body'")
        return to_tensor(value)

    def preprocess(self, data: list[Any]) -> torch.Tensor:
        tensors = []
        for index, row in enumerate(data):
            try:
                tensors.append(self.decode_row(row_payload(row)))
            except InputError as exc:
                raise InputError(f"instance {index}: {exc.message}") from None
        return stack_rows(tensors).to(self.device)


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
