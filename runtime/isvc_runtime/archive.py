"""Model archives (``.mar``): unpacking (safely, via the storage package) and reading the manifest."""

from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

from .model_store import MANIFEST
from .storage.extract import extract_archive

DEFAULT_MAX_UNPACKED_BYTES = 16 * 1024**3


class ArchiveError(Exception):
    """An archive that cannot be used; the model it holds fails to load with this message."""


def unpack(archive: Path, dest: Path, *, max_bytes: int = DEFAULT_MAX_UNPACKED_BYTES) -> Path:
    """The directory holding ``MAR-INF/`` for ``archive``: the archive itself when it is an unpacked
    (``no-archive``) directory, else a fresh directory under ``dest``."""
    if archive.is_dir():
        return archive
    try:
        extract_archive(archive, dest, max_bytes=max_bytes)
    except (ValueError, OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise ArchiveError(f"cannot unpack {archive.name}: {exc}") from None
    if (dest / MANIFEST).is_file():
        return dest
    # torch-model-archiver's tgz format nests everything under "<model-name>/".
    children = [p for p in dest.iterdir() if p.is_dir()]
    if len(children) == 1 and (children[0] / MANIFEST).is_file():
        return children[0]
    raise ArchiveError(f"{archive.name} has no {MANIFEST.as_posix()}")


def read_manifest(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArchiveError(f"{model_dir.name} has no {MANIFEST.as_posix()}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArchiveError(f"{MANIFEST.as_posix()} is not valid JSON: {exc}") from None
    model = manifest.get("model") if isinstance(manifest, dict) else None
    if not isinstance(model, dict):
        raise ArchiveError(f"{MANIFEST.as_posix()} has no 'model' object")
    for key in ("modelName", "handler", "serializedFile", "modelFile", "modelVersion", "configFile"):
        if key in model and not isinstance(model[key], str):
            raise ArchiveError(f"{MANIFEST.as_posix()}: model.{key} must be a string")
    for key in ("serializedFile", "modelFile", "configFile", "requirementsFile"):
        value = model.get(key)
        if isinstance(value, str) and value and not _inside(model_dir, value):
            raise ArchiveError(f"{MANIFEST.as_posix()}: model.{key} {value!r} points outside the archive")
    return manifest


def _inside(root: Path, relative: str) -> bool:
    return (root / relative).resolve().is_relative_to(root.resolve())
