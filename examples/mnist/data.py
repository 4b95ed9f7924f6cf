"""The MNIST test set from ``../shared/data/mnist`` and the requests the example sends.

The data stays in ``../shared`` (read-only, never copied into the repository): images and labels are
read from the idx-gz files at run time, and every request body is built from them in memory.

Split: the first 8,000 images train the model, the last 2,000 are held out for evaluation.
"""

from __future__ import annotations

import base64
import gzip
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

SHARED_ENV = "TORCH_ISVC_SHARED_DIR"
TRAIN_SIZE = 8000
HELDOUT_SIZE = 2000
MEAN = 0.1307
STD = 0.3081

_IMAGES_FILE = "t10k-images-idx3-ubyte.gz"
_LABELS_FILE = "t10k-labels-idx1-ubyte.gz"
_IMAGES_MAGIC = 2051
_LABELS_MAGIC = 2049


def shared_dir(override: Path | str | None = None) -> Path:
    """``../shared`` beside the checkout, unless an argument or ``$TORCH_ISVC_SHARED_DIR`` names another."""
    if override is not None:
        return Path(override)
    if env := os.environ.get(SHARED_ENV):
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared"


def mnist_dir(shared: Path | str | None = None) -> Path:
    return shared_dir(shared) / "data" / "mnist"


def mnist_request_path(shared: Path | str | None = None) -> Path:
    """The seed's v1 request: one PNG of a "2", answered with ``{"predictions": [2]}``."""
    return shared_dir(shared) / "data" / "requests" / "v1" / "mnist.json"


def _read_idx(path: Path, magic: int) -> tuple[tuple[int, ...], bytes]:
    raw = gzip.decompress(path.read_bytes())
    if len(raw) < 8 or int.from_bytes(raw[0:4], "big") != magic:
        raise ValueError(f"{path}: not an idx file with magic {magic}")
    ndim = 1 if magic == _LABELS_MAGIC else 3
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    payload = raw[4 + 4 * ndim :]
    if len(payload) != int(np.prod(dims)):
        raise ValueError(f"{path}: payload of {len(payload)} bytes does not match shape {dims}")
    return dims, payload


def load_images(shared: Path | str | None = None) -> np.ndarray:
    """All test images as ``uint8`` of shape ``[N, 28, 28]`` (0 = background, 255 = ink)."""
    dims, payload = _read_idx(mnist_dir(shared) / _IMAGES_FILE, _IMAGES_MAGIC)
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims).copy()


def load_labels(shared: Path | str | None = None) -> np.ndarray:
    """All test labels as ``int64`` of shape ``[N]``."""
    dims, payload = _read_idx(mnist_dir(shared) / _LABELS_FILE, _LABELS_MAGIC)
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims).astype(np.int64)


def train_split(shared: Path | str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first 8,000 images and labels: what ``train.py`` learns from."""
    return load_images(shared)[:TRAIN_SIZE], load_labels(shared)[:TRAIN_SIZE]


def heldout_split(shared: Path | str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The last 2,000 images and labels: never trained on, used to measure accuracy."""
    images, labels = load_images(shared), load_labels(shared)
    if len(images) < TRAIN_SIZE + HELDOUT_SIZE:
        raise ValueError(f"expected at least {TRAIN_SIZE + HELDOUT_SIZE} images, found {len(images)}")
    return images[-HELDOUT_SIZE:], labels[-HELDOUT_SIZE:]


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """Model input: ``float32 [N, 1, 28, 28]``, scaled to [0, 1] then normalised like the handler does."""
    x = torch.from_numpy(np.array(images, dtype=np.float32)).div_(255.0).unsqueeze(1)
    return (x - MEAN) / STD


def png_bytes(image: np.ndarray) -> bytes:
    """One ``[28, 28]`` uint8 image as a greyscale PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def png_b64(image: np.ndarray) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")


def v1_request(images: np.ndarray) -> dict[str, Any]:
    """A KServe v1 ``:predict`` body in the seed's format: one base64 PNG per instance."""
    return {"instances": [{"data": png_b64(image), "target": 0} for image in images]}


def v2_bytes_request(images: np.ndarray, *, name: str = "input-0") -> dict[str, Any]:
    """A v2 ``/infer`` body with one BYTES tensor of base64 PNGs (as TorchServe's v2 samples send)."""
    return {
        "inputs": [
            {"name": name, "shape": [len(images)], "datatype": "BYTES", "data": [png_b64(i) for i in images]}
        ]
    }


def v2_fp32_request(images: np.ndarray, *, name: str = "input-0") -> dict[str, Any]:
    """A v2 ``/infer`` body with the model input itself: a normalised FP32 ``[N, 1, 28, 28]`` tensor."""
    tensor = to_tensor(images)
    return {
        "inputs": [
            {
                "name": name,
                "shape": list(tensor.shape),
                "datatype": "FP32",
                "data": tensor.flatten().tolist(),
            }
        ]
    }


def decode_png_b64(data: str) -> np.ndarray:
    """The inverse of :func:`png_b64`, for checking a request's image (e.g. the seed's)."""
    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8)
