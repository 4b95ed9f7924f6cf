"""Image transforms for handlers, in torch and Pillow only.

``Compose``, ``ToTensor``, ``Normalize``, ``Resize`` and ``CenterCrop`` give the same numbers as
torchvision's classes of those names for Pillow images (and numpy arrays for ``ToTensor``), so a handler
can use them instead. Importing torchvision pulls in ``torch._dynamo`` and costs over a second of the
runtime's cold start; these cost nothing beyond torch. Handlers that import torchvision keep working.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["CenterCrop", "Compose", "Normalize", "Resize", "ToTensor"]


class Compose:
    """Apply ``transforms`` in order."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, value: Any) -> Any:
        for transform in self.transforms:
            value = transform(value)
        return value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms!r})"


_PIL_DTYPES: dict[str, Any] = {
    "I": np.int32,
    "I;16" if sys.byteorder == "little" else "I;16B": np.int16,
    "F": np.float32,
}


class ToTensor:
    """Pillow image or ``HxW[xC]`` array → ``CxHxW`` tensor; 8-bit data becomes float32 in [0, 1],
    other types keep theirs."""

    def __call__(self, picture: Image.Image | np.ndarray) -> torch.Tensor:
        if isinstance(picture, np.ndarray):
            if picture.ndim not in (2, 3):
                raise ValueError(f"ToTensor needs a 2- or 3-dimensional array, not {picture.ndim}")
            array = picture[:, :, None] if picture.ndim == 2 else picture
            tensor = torch.from_numpy(array.transpose((2, 0, 1))).contiguous()
        elif isinstance(picture, Image.Image):
            array = np.array(picture, _PIL_DTYPES.get(picture.mode, np.uint8), copy=True)
            tensor = torch.from_numpy(array)
            if picture.mode == "1":
                tensor = 255 * tensor
            tensor = tensor.view(picture.size[1], picture.size[0], len(picture.getbands()))
            tensor = tensor.permute((2, 0, 1)).contiguous()
        else:
            raise TypeError(f"ToTensor takes a Pillow image or a numpy array, not {type(picture).__name__}")
        if tensor.dtype == torch.uint8:
            return tensor.to(dtype=torch.get_default_dtype()).div(255)
        return tensor

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Normalize:
    """``(tensor - mean) / std`` per channel of a float ``[..., C, H, W]`` tensor."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], inplace: bool = False) -> None:
        self.mean = mean
        self.std = std
        self.inplace = inplace

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"Normalize takes a tensor, not {type(tensor).__name__}")
        if not tensor.is_floating_point():
            raise TypeError(f"Normalize takes a float tensor, not {tensor.dtype}")
        if tensor.ndim < 3:
            raise ValueError(f"Normalize needs a [..., C, H, W] tensor, not shape {tuple(tensor.shape)}")
        if not self.inplace:
            tensor = tensor.clone()
        mean = torch.as_tensor(self.mean, dtype=tensor.dtype, device=tensor.device)
        std = torch.as_tensor(self.std, dtype=tensor.dtype, device=tensor.device)
        if (std == 0).any():
            raise ValueError(f"Normalize: std {self.std} has a zero, which would divide by zero")
        if mean.ndim == 1:
            mean = mean.view(-1, 1, 1)
        if std.ndim == 1:
            std = std.view(-1, 1, 1)
        return tensor.sub_(mean).div_(std)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if len(size) == 1:
        return size[0], size[0]
    return size[0], size[1]


def _need_image(image: Any, name: str) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise TypeError(f"{name} takes a Pillow image, not {type(image).__name__}")
    return image


class Resize:
    """Resize a Pillow image. ``size`` an int: the shorter side becomes ``size`` and the longer keeps
    the aspect ratio (rounded down); ``(h, w)``: exactly that. ``interpolation`` is Pillow's."""

    def __init__(
        self,
        size: int | Sequence[int],
        interpolation: int = Image.Resampling.BILINEAR,
        max_size: int | None = None,
    ) -> None:
        if not isinstance(size, int) and len(size) not in (1, 2):
            raise ValueError(f"Resize: size must be an int or 1 or 2 ints, not {size!r}")
        if max_size is not None and not (isinstance(size, int) or len(size) == 1):
            raise ValueError("Resize: max_size applies only when size is one number")
        self.size = size
        self.interpolation = interpolation
        self.max_size = max_size

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` after resizing an image of ``height`` x ``width``."""
        if not isinstance(self.size, int) and len(self.size) == 2:
            return self.size[0], self.size[1]
        requested = self.size if isinstance(self.size, int) else self.size[0]
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = requested, int(requested * long / short)
        if self.max_size is not None:
            if self.max_size <= requested:
                raise ValueError(f"Resize: max_size {self.max_size} must exceed size {requested}")
            if new_long > self.max_size:
                new_short, new_long = int(self.max_size * new_short / new_long), self.max_size
        return (new_long, new_short) if width <= height else (new_short, new_long)

    def __call__(self, image: Image.Image) -> Image.Image:
        image = _need_image(image, "Resize")
        height, width = self.output_size(image.height, image.width)
        if (height, width) == (image.height, image.width):
            return image
        return image.resize((width, height), self.interpolation)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, interpolation={self.interpolation})"


class CenterCrop:
    """Crop the centre ``size`` (int, or ``(h, w)``) of a Pillow image; a smaller image is first padded
    with zeros on every side to that size."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair(size)

    def __call__(self, image: Image.Image) -> Image.Image:
        image = _need_image(image, "CenterCrop")
        crop_h, crop_w = self.size
        width, height = image.size
        if crop_w > width or crop_h > height:
            left = (crop_w - width) // 2 if crop_w > width else 0
            top = (crop_h - height) // 2 if crop_h > height else 0
            right = (crop_w - width + 1) // 2 if crop_w > width else 0
            bottom = (crop_h - height + 1) // 2 if crop_h > height else 0
            padded = Image.new(image.mode, (width + left + right, height + top + bottom), 0)
            if image.mode == "P" and image.palette is not None:
                padded.putpalette(image.getpalette() or [])
            padded.paste(image, (left, top))
            image = padded
            width, height = image.size
            if (crop_w, crop_h) == (width, height):
                return image
        top = round((height - crop_h) / 2.0)
        left = round((width - crop_w) / 2.0)
        return image.crop((left, top, left + crop_w, top + crop_h))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"
