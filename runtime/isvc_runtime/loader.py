"""Loading one archive: unpack, read the manifest, import the handler, initialize it with a context."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .archive import ArchiveError, read_manifest, unpack
from .context import Context
from .handler_metrics import HandlerMetrics
from .handlers import BUILTIN_HANDLERS
from .inference import TensorMetadata, tensor_metadata

if TYPE_CHECKING:
    from .handlers.merging import MergePlan

log = logging.getLogger("isvc_runtime.loader")

EntryPoint = Callable[[list[Any], Any], Any]


@dataclass(slots=True)
class LoadedModel:
    name: str  # the manifest's modelName
    version: str
    model_dir: Path
    manifest: dict[str, Any]
    handler: Any  # the handler instance, or the module for a module-level ``handle``
    entry_point: EntryPoint  # handle(data, context)
    context: Context
    model_yaml_config: dict[str, Any]
    inputs: list[TensorMetadata] | None = None  # None: unknown
    outputs: list[TensorMetadata] | None = None
    # Whether (and how) requests may share a handler call under batchSize 1 (handlers/merging.py).
    merge_plan: MergePlan | None = None


def declared_tensors(
    handler: Any, model_yaml_config: dict[str, Any], kind: str
) -> list[TensorMetadata] | None:
    """A model's ``kind`` (``inputs`` or ``outputs``) as declared by its handler (``input_metadata``,
    ``output_metadata``), else by its archive's model-config.yaml (``metadata: {inputs: [...]}``),
    else None: unknown. Never learnt from traffic: what one client sent says nothing about the model."""
    declared = getattr(handler, f"{kind[:-1]}_metadata", None)
    if declared is None:
        section = model_yaml_config.get("metadata")
        declared = section.get(kind) if isinstance(section, dict) else None
    if declared is None:
        return None
    tensors = tensor_metadata(declared)
    if tensors is None:
        log.warning("model metadata: malformed %s %r; they are reported as unknown", kind, declared)
    return tensors


def read_model_yaml(model_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    config_file = manifest["model"].get("configFile")
    if not config_file:
        return {}
    try:
        loaded = yaml.safe_load((model_dir / config_file).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ArchiveError(f"configFile {config_file} cannot be read: {exc}") from None
    return loaded if isinstance(loaded, dict) else {}


def prepare(archive: Path, work_dir: Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Unpack ``archive`` and return ``(model_dir, manifest, model_yaml_config)``; raises ArchiveError."""
    model_dir = unpack(archive, work_dir)
    manifest = read_manifest(model_dir)
    return model_dir, manifest, read_model_yaml(model_dir, manifest)


def _purge_shadowed_modules(model_dir: Path) -> None:
    """Two archives may both ship ``model.py`` or ``handler.py``; forget the previous one's modules so
    this archive imports its own."""
    for path in model_dir.iterdir():
        stem = (
            path.stem if path.suffix == ".py" else (path.name if (path / "__init__.py").is_file() else None)
        )
        if not stem or stem not in sys.modules:
            continue
        module_file = getattr(sys.modules[stem], "__file__", None) or ""
        if "site-packages" in module_file or "/lib/python" in module_file:
            continue  # a library the handler imports, not an archive module
        del sys.modules[stem]


def _import_handler(model_dir: Path, handler: str) -> tuple[Any, str | None]:
    """The handler's module and optional function name (``file.py:function``)."""
    spec, _, function = handler.partition(":")
    function_name = function or None
    module_name = spec[:-3] if spec.endswith(".py") else spec
    module_name = module_name.split("/")[-1]
    if (model_dir / f"{module_name}.py").is_file() or (model_dir / module_name / "__init__.py").is_file():
        return importlib.import_module(module_name), function_name
    if module_name in BUILTIN_HANDLERS:
        target_module, _, class_name = BUILTIN_HANDLERS[module_name].partition(":")
        return getattr(importlib.import_module(target_module), class_name), function_name
    if importlib.util.find_spec("ts") is not None:
        try:
            return importlib.import_module(f"ts.torch_handler.{module_name}"), function_name
        except ModuleNotFoundError:
            pass
    try:
        return importlib.import_module(module_name), function_name
    except ModuleNotFoundError:
        raise ArchiveError(
            f"handler {handler!r} is neither a file in the archive nor a built-in handler "
            f"({', '.join(sorted(BUILTIN_HANDLERS))})"
        ) from None


def _entry_point(target: Any, function_name: str | None) -> tuple[Any, EntryPoint, Callable[[Any], Any]]:
    """``(handler, handle, initialize)`` following TorchServe: a module-level function (default name
    ``handle``) wins, else the single class defined in the module."""
    if isinstance(target, type):
        instance = target()
        return instance, instance.handle, instance.initialize
    name = function_name or "handle"
    function = getattr(target, name, None)
    if callable(function) and not isinstance(function, type):
        return target, function, lambda context: function(None, context)
    classes = [
        value
        for value in vars(target).values()
        if inspect.isclass(value) and value.__module__ == target.__name__
    ]
    if len(classes) != 1:
        names = ", ".join(c.__name__ for c in classes) or "none"
        raise ArchiveError(
            f"handler module {target.__name__} must define a '{name}' function "
            f"or exactly one class (found: {names})"
        )
    instance = classes[0]()
    if not callable(getattr(instance, "handle", None)):
        raise ArchiveError(f"handler class {classes[0].__name__} has no handle method")
    return instance, instance.handle, getattr(instance, "initialize", lambda context: None)


def load(
    model_dir: Path,
    manifest: dict[str, Any],
    model_yaml_config: dict[str, Any],
    *,
    served_name: str,
    batch_size: int,
    gpu_id: int | None,
    limit_max_image_pixels: bool = True,
) -> LoadedModel:
    """Import and initialize the handler of an unpacked archive. Runs the model's own code."""
    model_info = manifest["model"]
    if model_info.get("requirementsFile"):
        log.warning(
            "%s: requirementsFile %s is not installed at runtime; bake dependencies into the image",
            served_name,
            model_info["requirementsFile"],
        )
    handler_spec = model_info.get("handler") or "base_handler"
    if str(model_dir) not in sys.path:
        sys.path.insert(0, str(model_dir))
    _purge_shadowed_modules(model_dir)
    importlib.invalidate_caches()
    target, function_name = _import_handler(model_dir, handler_spec)
    handler, entry_point, initialize = _entry_point(target, function_name)
    context = Context(
        model_name=served_name,
        model_dir=str(model_dir),
        manifest=manifest,
        batch_size=batch_size,
        gpu_id=gpu_id,
        metrics=HandlerMetrics(served_name),
        model_yaml_config=model_yaml_config,
        limit_max_image_pixels=limit_max_image_pixels,
    )
    context.request_processor = []
    initialize(context)
    from .handlers.merging import merge_plan  # imports torch: here, on the loader thread

    return LoadedModel(
        name=model_info.get("modelName") or served_name,
        version=str(model_info.get("modelVersion") or "1.0"),
        model_dir=model_dir,
        manifest=manifest,
        handler=handler,
        entry_point=entry_point,
        context=context,
        model_yaml_config=model_yaml_config,
        inputs=declared_tensors(handler, model_yaml_config, "inputs"),
        outputs=declared_tensors(handler, model_yaml_config, "outputs"),
        merge_plan=merge_plan(handler),
    )
