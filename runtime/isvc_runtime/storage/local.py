"""Already-mounted paths: absolute paths, file:// URIs and pvc:// URIs.

``pvc://CLAIM/PATH`` means PATH inside the claim mounted at ``$PVC_MOUNT_ROOT`` (default ``/mnt/pvc``,
where the operator mounts the claim in the pod; it passes ``/mnt/pvc/PATH`` itself, but a pvc:// URI is
accepted the same way). The claim's name is not part of the path: one claim is mounted per pod.

Files are hard-linked into the destination when it is on the same filesystem (cheap, and the runtime
only reads them) and copied otherwise; STORAGE_LOCAL_MODE=copy forces copies. A single archive file
(.zip/.tar/.tar.gz/.tgz) is extracted; a single other file is kept under its name.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

from isvc_runtime.storage.errors import StorageError
from isvc_runtime.storage.files import download_path, is_archive_name, place_single_file
from isvc_runtime.storage.progress import Progress


def local_path(uri: str) -> Path:
    if uri.startswith("file://"):
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise StorageError(f"{uri}: file:// URIs must name a local path (file:///path)")
        return Path(unquote(parts.path))
    if uri.startswith("pvc://"):
        rest = uri[len("pvc://") :]
        claim, _, sub = rest.partition("/")
        if not claim:
            raise StorageError(f"{uri}: no claim name in the URI")
        root = Path(os.environ.get("PVC_MOUNT_ROOT", "/mnt/pvc"))
        path = (root / sub).resolve() if sub else root
        if not path.is_relative_to(root.resolve()):
            raise StorageError(f"{uri}: path climbs out of the claim")
        return path
    return Path(uri)


def _link_or_copy(src: str, dst: str, *, copy_only: bool) -> str:
    if not copy_only:
        try:
            os.link(src, dst)
            return dst
        except OSError:
            pass
    return shutil.copy2(src, dst)


def fetch(uri: str, model: Path, progress: Progress) -> None:
    source = local_path(uri)
    if not source.exists():
        raise StorageError(f"{uri}: no such file or directory")
    copy_only = os.environ.get("STORAGE_LOCAL_MODE", "auto") == "copy"

    def counted(src: str, dst: str) -> str:
        result = _link_or_copy(src, dst, copy_only=copy_only)
        progress.update(os.path.getsize(dst))
        return result

    if source.is_file():
        name = source.name
        if is_archive_name(name):
            _extract_local(source, name, model)
            return
        counted(str(source), str(model / name))
        return
    entries = [p for p in source.iterdir() if p.name not in ("lost+found",)]
    if not any(p.is_file() for p in source.rglob("*")):
        raise StorageError(f"{uri}: directory holds no files")
    for entry in entries:
        if entry.is_dir():
            shutil.copytree(entry, model / entry.name, copy_function=counted, symlinks=False)
        else:
            counted(str(entry), str(model / entry.name))


def _extract_local(source: Path, name: str, model: Path) -> None:
    # extract straight from the mounted file; place_single_file would delete its input
    scratch = download_path(model, name)
    os.symlink(source.resolve(), scratch)
    place_single_file(scratch, name, model)
