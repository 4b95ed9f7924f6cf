"""Dispatch a source URI to its fetcher and place the result atomically."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from isvc_runtime.storage import gcs, local, s3, web
from isvc_runtime.storage.errors import StorageError, redact_uri
from isvc_runtime.storage.placement import place
from isvc_runtime.storage.progress import Progress, human_bytes

Fetcher = Callable[[str, Path, Progress], None]

SCHEMES: dict[str, Fetcher] = {
    "gs": gcs.fetch,
    "s3": s3.fetch,
    "http": web.fetch,
    "https": web.fetch,
    "pvc": local.fetch,
    "file": local.fetch,
}


def fetcher_for(uri: str) -> Fetcher:
    if "://" not in uri:
        if uri.startswith("/") or os.path.exists(uri):
            return local.fetch
        raise StorageError(f"{uri!r}: not a URI or an absolute path")
    scheme = uri.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        supported = ", ".join(f"{s}://" for s in SCHEMES)
        raise StorageError(
            f"unsupported storage URI scheme {scheme}:// (supported: {supported}, absolute paths)"
        )
    return SCHEMES[scheme]


def initialize(uri: str, dest: Path, *, progress_interval: float = 5.0) -> bool:
    """Fetch ``uri`` into ``dest``. Returns False when ``dest`` already held this model."""
    fetch = fetcher_for(uri)
    shown = redact_uri(uri)
    progress = Progress(interval=progress_interval)
    started = time.monotonic()
    placed = place(Path(dest), shown, lambda model: fetch(uri, model, progress))
    elapsed = time.monotonic() - started
    if placed:
        rate = progress.done / elapsed if elapsed > 0 else 0.0
        print(
            f"storage-initializer: placed {shown} in {dest}: {human_bytes(progress.done)} "
            f"in {elapsed:.1f}s ({human_bytes(rate)}/s)",
            file=sys.stderr,
            flush=True,
        )
    else:
        print(f"storage-initializer: {dest} already holds {shown}", file=sys.stderr, flush=True)
    return placed
