"""The base handler: loads eager, TorchScript and torch.export models; tensor rows in, lists out."""

from __future__ import annotations

import base64
import binascii
import importlib.util
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError

log = logging.getLogger("isvc_runtime.handlers")


def row_payload(row: Any) -> Any:
    """A row's input: its ``data`` (or ``body``) when it is a dict, else the row itself."""
    if isinstance(row, dict):
        value = row.get("data")
        if value is None:
            value = row.get("body")
        return value
    return row


def decode_base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("input is a string but not valid base64") from None


def to_tensor(value: Any, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
    """A tensor-like row (tensor, numpy array, nested list of numbers) as a tensor."""
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"input is not a tensor of numbers: {exc}") from None
    if tensor.dtype != torch.bool and not (tensor.is_floating_point() or tensor.dtype in _INTEGER_TYPES):
        raise InputError(f"input has unsupported element type {tensor.dtype}")
    return tensor if dtype is None or tensor.dtype == dtype else tensor.to(dtype)


_INTEGER_TYPES = {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}


def stack_rows(tensors: list[torch.Tensor]) -> torch.Tensor:
    first = tensors[0].shape
    for index, tensor in enumerate(tensors):
        if tensor.shape != first:
            raise InputError(
                "inputs of one batch must have the same shape: "
                f"row 0 has {list(first)}, row {index} has {list(tensor.shape)}"
            )
    return torch.stack(tensors)


def load_module_from_file(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def select_device(gpu_id: Any) -> torch.device:
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{int(gpu_id)}")
    return torch.device("cpu")


def load_model(model_dir: Path, manifest: dict[str, Any], device: torch.device) -> torch.nn.Module:
    """The manifest's model: eager (``modelFile`` + state_dict ``serializedFile``), TorchScript
    (``.pt``/``.pth`` without modelFile) or a ``torch.export`` program (``.pt2``)."""
    model_info = manifest.get("model", {})
    serialized = model_info.get("serializedFile") or ""
    model_file = model_info.get("modelFile") or ""
    weights = model_dir / serialized if serialized else None
    if model_file:
        model_class = _single_module_class(model_dir / model_file)
        model = model_class()
        if weights is not None:
            state = torch.load(weights, map_location=device, weights_only=True)
            if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
                state = state["state_dict"]
            model.load_state_dict(state)
    elif weights is None:
        raise RuntimeError("the manifest names neither a serializedFile nor a modelFile")
    elif weights.suffix == ".pt2":
        model = torch.export.load(str(weights)).module()
    elif weights.suffix in (".pt", ".pth", ".ts", ".torchscript"):
        model = torch.jit.load(str(weights), map_location=device)
    else:
        raise RuntimeError(
            f"cannot load {serialized}: expected .pt (TorchScript), .pt2 (torch.export) or a modelFile"
        )
    model = model.to(device)
    if hasattr(model, "eval") and not isinstance(model, torch.fx.GraphModule):
        model.eval()
    return model


def _single_module_class(path: Path) -> type[torch.nn.Module]:
    if not path.is_file():
        raise RuntimeError(f"modelFile {path.name} is missing from the archive")
    module = load_module_from_file(path, f"_isvc_model_{abs(hash(str(path)))}")
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, torch.nn.Module)
        and value.__module__ == module.__name__
    ]
    if len(classes) != 1:
        names = ", ".join(c.__name__ for c in classes) or "none"
        raise RuntimeError(
            f"modelFile {path.name} must define exactly one nn.Module subclass (found: {names})"
        )
    return classes[0]


def load_label_mapping(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    mapping = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(mapping, dict):
        raise RuntimeError(f"{path.name} must be a JSON object mapping class indices to names")
    return mapping


class BaseHandler:
    """TorchServe's handler contract: ``initialize``, ``preprocess``, ``inference``, ``postprocess``,
    ``handle``. Subclasses override the steps they need."""

    def __init__(self) -> None:
        self.model: Any = None
        self.mapping: dict[str, Any] | None = None
        self.device: torch.device = torch.device("cpu")
        self.initialized = False
        self.context: Any = None
        self.manifest: dict[str, Any] | None = None
        self.model_dir: Path | None = None

    def initialize(self, context: Any) -> None:
        properties = context.system_properties
        self.device = select_device(properties.get("gpu_id"))
        self.manifest = context.manifest
        self.model_dir = Path(properties["model_dir"])
        self.model = load_model(self.model_dir, self.manifest or {}, self.device)
        self.mapping = load_label_mapping(self.model_dir / "index_to_name.json")
        self.context = context
        self.initialized = True

    def preprocess(self, data: list[Any]) -> torch.Tensor:
        return stack_rows([to_tensor(row_payload(row)) for row in data]).to(self.device)

    def inference(self, data: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode():
            try:
                return self.model(data.to(self.device), *args, **kwargs)
            except torch.OutOfMemoryError:
                raise  # the server's trouble, not the input's: a 500
            except (RuntimeError, ValueError, IndexError) as exc:
                # The model loaded and ran before: a failure here comes from the input's shape or type.
                raise InputError(
                    f"the model rejected an input of shape {list(data.shape)}: {_first_line(exc)}"
                ) from None

    def postprocess(self, data: Any) -> list[Any]:
        return data.tolist() if isinstance(data, torch.Tensor) else list(data)

    def handle(self, data: list[Any], context: Any) -> list[Any]:
        self.context = context
        if context is not None and context.get_request_header(0, "explain") == "True":
            return self.explain_handle(self.preprocess(data), data)
        return self.postprocess(self.inference(self.preprocess(data)))

    def explain_handle(self, data_preprocess: torch.Tensor, raw_data: list[Any]) -> list[Any]:
        raise InputError(f"{type(self).__name__} does not support explanations")

    def get_device(self) -> torch.device:
        return self.device


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
