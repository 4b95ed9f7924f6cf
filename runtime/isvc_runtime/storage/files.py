"""Helpers shared by every source: object keys to safe paths, single files vs archives, byte sinks."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Sequence
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


def split_bucket_uri(uri: str, scheme: str) -> tuple[str, str]:
    """``{scheme}bucket/prefix`` (``scheme`` such as ``"gs://"``) as (bucket, prefix); a StorageError
    when the URI names no bucket."""
    rest = uri[len(scheme) :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise StorageError(f"{uri}: no bucket in the URI")
    return bucket, prefix


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


def download_listing(
    uri: str,
    objects: Sequence[tuple[str, str, int]],
    prefix: str,
    model: Path,
    progress: Progress,
    download: Callable[[str, Path], None],
) -> None:
    """Fetch a bucket listing of (key, relative path, size) into ``model`` with ``download(key, target)``:
    a prefix that names one object exactly is a single file (placed by :func:`place_single_file`), any
    other listing is copied key by key, ``STORAGE_CONCURRENCY`` (default 4) at a time. An empty listing
    is a StorageError."""
    if not objects:
        raise StorageError(f"{uri}: no objects found under this prefix")
    progress.add_total(sum(size for _key, _rel, size in objects))
    if len(objects) == 1 and objects[0][0] == prefix:
        key, rel, _size = objects[0]
        target = download_path(model, rel)
        download(key, target)
        place_single_file(target, rel, model)
        return
    workers = int(os.environ.get("STORAGE_CONCURRENCY", "4"))
    run_all(download, [(key, model / rel) for key, rel, _size in objects], workers)
