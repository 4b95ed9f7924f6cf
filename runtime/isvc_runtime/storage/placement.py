"""Atomic placement of a model into the destination directory.

The destination (``/mnt/models`` in a pod) is usually an emptyDir mount point: it exists already and
cannot be replaced by a rename. So the model is built in a hidden staging directory *inside* it
(``DEST/.isvc-staging-*``, same filesystem), and only when everything is downloaded, extracted and
checked are its top-level entries renamed into ``DEST``. Then the completion marker
``DEST/.isvc-model-ready`` (JSON: source, entries, files, bytes, completed_at) is written atomically.

Guarantees the runtime can rely on:

* while the marker is absent, ``DEST`` holds no complete model, and after an interrupted run it holds
  no visible (non-hidden) entry except during the few renames of the final step;
* the marker appears only after every entry is in place;
* a run that is interrupted during those renames leaves the journal ``DEST/.isvc-moving``; the next run
  removes the listed entries, and stale staging directories, before starting again.

If the marker already names the same source, the run does nothing (an init container restarted after
success keeps its emptyDir). A different source replaces the entries the marker lists.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from isvc_runtime.storage.errors import StorageError

COMPLETE_MARKER = ".isvc-model-ready"
MOVING_JOURNAL = ".isvc-moving"
STAGING_PREFIX = ".isvc-staging-"
_IGNORED = {"lost+found"}


def is_complete(dest: Path) -> bool:
    """True when ``dest`` holds a model placed completely by the storage initializer."""
    return (Path(dest) / COMPLETE_MARKER).is_file()


def read_marker(dest: Path) -> dict[str, object] | None:
    try:
        data = json.loads((Path(dest) / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _write_json_atomic(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def recover(dest: Path) -> None:
    """Undo what an interrupted earlier run left behind."""
    for stale in dest.glob(STAGING_PREFIX + "*"):
        _remove(stale)
    journal = dest / MOVING_JOURNAL
    if journal.exists():
        try:
            names = json.loads(journal.read_text())
        except ValueError:
            names = []
        for name in names if isinstance(names, list) else []:
            if isinstance(name, str) and "/" not in name and name not in ("", ".", ".."):
                _remove(dest / name)
        _remove(dest / COMPLETE_MARKER)
        journal.unlink()
    with contextlib.suppress(FileNotFoundError):
        (dest / (COMPLETE_MARKER + ".tmp")).unlink()


def visible_entries(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir() if not p.name.startswith(".") and p.name not in _IGNORED)


@contextlib.contextmanager
def staging_dir(dest: Path) -> Iterator[Path]:
    """A hidden directory inside ``dest``, removed on any failure."""
    path = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=dest))
    try:
        yield path
    finally:
        _remove(path)


def place(dest: Path, source: str, fill: Callable[[Path], None]) -> bool:
    """Build the model with ``fill(model_dir)`` and move it into ``dest`` atomically.

    Returns False (and does nothing) when ``dest`` already holds a complete model from ``source``.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    recover(dest)
    marker = read_marker(dest)
    if marker is not None:
        if marker.get("source") == source and all(
            (dest / str(n)).exists() or (dest / str(n)).is_symlink()
            for n in marker.get("entries", [])  # type: ignore[union-attr]
        ):
            return False
        for name in marker.get("entries", []):  # type: ignore[union-attr]
            if isinstance(name, str) and "/" not in name and name not in ("", ".", ".."):
                _remove(dest / name)
        (dest / COMPLETE_MARKER).unlink()
    if leftovers := visible_entries(dest):
        raise StorageError(f"destination {dest} is not empty (holds {', '.join(leftovers[:5])})")

    with staging_dir(dest) as staging:
        model = staging / "model"
        model.mkdir()
        fill(model)
        names = sorted(os.listdir(model))
        files = 0
        size = 0
        for root, _dirs, filenames in os.walk(model):
            for name in filenames:
                files += 1
                with contextlib.suppress(OSError):
                    size += os.lstat(os.path.join(root, name)).st_size
        if files == 0:
            raise StorageError(f"{source}: nothing to place (no files)")
        _write_json_atomic(dest / MOVING_JOURNAL, names)
        for name in names:
            os.rename(model / name, dest / name)
        _write_json_atomic(
            dest / COMPLETE_MARKER,
            {
                "source": source,
                "entries": names,
                "files": files,
                "bytes": size,
                "completed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )
        (dest / MOVING_JOURNAL).unlink()
    return True
