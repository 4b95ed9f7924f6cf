"""Helpers shared by every source: object keys to safe paths, single files vs archives, byte sinks."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from isvc_runtime.storage.errors import StorageError
from isvc_runtime.storage.extract import DEFAULT_MAX_BYTES, UnsafeArchiveError, _safe_relpath, extract_archive
from isvc_runtime.storage.progress import Progress

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


def is_archive_name(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def max_extract_bytes() -> int:
    return int(os.environ.get("STORAGE_MAX_EXTRACT_BYTES", DEFAULT_MAX_BYTES))


def safe_relpath(key: str) -> str:
    """An object key (relative to the prefix) as a relative path, refusing absolute names and '..'."""
    try:
        return _safe_relpath(key)
    except UnsafeArchiveError as e:
        raise StorageError(f"refusing object {key!r}: {e.reason}") from None


def relative_key(key: str, prefix: str) -> str | None:
    """Where ``key`` goes under the model directory for a listing of ``prefix``; None when it is a
    sibling that merely shares the prefix's characters (``models/mnist2`` for ``models/mnist``)."""
    if key == prefix:
        return key.rsplit("/", 1)[-1]
    if not prefix or prefix.endswith("/"):
        return key[len(prefix) :]
    if key.startswith(prefix + "/"):
        return key[len(prefix) + 1 :]
    return None


def place_single_file(downloaded: Path, name: str, model: Path) -> None:
    """Extract ``downloaded`` into ``model`` when ``name`` says it is an archive, else keep it as ``name``."""
    if is_archive_name(name):
        try:
            extract_archive(downloaded, model, max_bytes=max_extract_bytes())
        except ValueError as e:
            raise StorageError(f"{name}: {e}") from None
        downloaded.unlink()
    else:
        os.rename(downloaded, model / safe_relpath(name))


def download_path(model: Path, name: str) -> Path:
    """Where a single object is downloaded before it is placed: beside ``model``, inside staging."""
    return model.parent / ("download-" + safe_relpath(name).replace("/", "_"))


class CountingWriter:
    """A write-only file object that reports every write to a :class:`Progress`."""

    def __init__(self, raw: BinaryIO, progress: Progress) -> None:
        self.raw = raw
        self.progress = progress
        self.written = 0

    def write(self, data: bytes) -> int:
        n = self.raw.write(data)
        n = len(data) if n is None else n
        self.written += n
        self.progress.update(n)
        return n

    def flush(self) -> None:
        self.raw.flush()

    def tell(self) -> int:
        return self.written


def run_all(download: Callable[[str, Path], None], jobs: list[tuple[str, Path]], workers: int) -> None:
    """Run the downloads on a few threads; the first failure cancels what has not started."""
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        for future in [pool.submit(download, key, target) for key, target in jobs]:
            future.result()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def insecure_warning_once(setting: str) -> None:
    """One line saying TLS verification is off, instead of urllib3's warning on every request."""
    import urllib3

    warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
    print(
        f"storage-initializer: TLS certificate verification is off ({setting})", file=sys.stderr, flush=True
    )
