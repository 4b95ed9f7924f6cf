"""Safe extraction of zip and tar (plain, gzip, bzip2, xz) archives.

Everything is unpacked into a hidden temporary directory on the destination's filesystem first and
moved into place only once the whole archive has been checked and written, so a refused or broken
archive leaves ``dest`` as it was (absent, or an empty directory).

Refused, naming the entry (:class:`UnsafeArchiveError`): absolute names, ``..`` components, links whose
target lies outside the destination, device files and FIFOs, and archives whose *decompressed* bytes,
counted while streaming (headers are not trusted), exceed ``max_bytes``.
"""

from __future__ import annotations

import contextlib
import gzip
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

DEFAULT_MAX_BYTES = 64 * 1024**3  # 64 GiB: above any single model we expect, below a full disk
_CHUNK = 1024 * 1024
_MAX_LINK_TARGET = 4096


class UnsafeArchiveError(ValueError):
    """An archive entry that would escape the destination or exceed the size cap."""

    def __init__(self, entry: str, reason: str) -> None:
        super().__init__(f"unsafe archive entry {entry!r}: {reason}")
        self.entry = entry
        self.reason = reason


class ArchiveFormatError(ValueError):
    """The file is neither a zip nor a tar archive (or is corrupt)."""


def extract_archive(archive: Path, dest: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Unpack ``archive`` (zip or tar, detected by content) into ``dest``.

    ``dest`` must not exist or be an empty directory (for example a mount point); it is created when
    absent. On any error ``dest`` is left exactly as it was before the call.
    """
    archive = Path(archive)
    dest = Path(dest)
    kind = detect_format(archive)
    if dest.exists():
        if not dest.is_dir():
            raise FileExistsError(f"destination {dest} exists and is not a directory")
        if any(dest.iterdir()):
            raise FileExistsError(f"destination {dest} is not empty")
    with _staging(dest) as staging:
        writer = _Writer(staging, max_bytes)
        if kind == "zip":
            _extract_zip(archive, writer)
        else:
            _extract_tar(archive, writer)
        writer.check_links()


def detect_format(archive: Path) -> str:
    """``"zip"`` or ``"tar"``, from the file's content (its name is not consulted)."""
    with open(archive, "rb") as f:
        head = f.read(4)
    if head in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    try:
        with tarfile.open(archive, "r:*"):
            return "tar"
    except (tarfile.TarError, EOFError, OSError):
        pass
    if zipfile.is_zipfile(archive):  # zip with a prefix (self-extracting stub and the like)
        return "zip"
    raise ArchiveFormatError(f"{archive.name}: not a zip or tar archive")


@contextlib.contextmanager
def _staging(dest: Path) -> Iterator[Path]:
    """A temporary directory on ``dest``'s filesystem whose contents become ``dest`` on success.

    When ``dest`` exists (a mount point cannot be replaced by a rename) the staging directory lives
    inside it and its entries are moved up one by one; otherwise it is a sibling renamed onto ``dest``.
    """
    exists = dest.is_dir()
    if not exists:
        dest.parent.mkdir(parents=True, exist_ok=True)
    parent = dest if exists else dest.parent
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=parent))
    try:
        yield staging
        if exists:
            for entry in os.listdir(staging):
                os.rename(staging / entry, dest / entry)
            staging.rmdir()
        else:
            os.chmod(staging, 0o755)  # mkdtemp made it private; dest is an ordinary directory
            os.rename(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _safe_relpath(name: str) -> str:
    """The archive name as a relative POSIX path, or raise when it is absolute or climbs out."""
    if "\x00" in name:
        raise UnsafeArchiveError(name, "NUL byte in name")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(name, "absolute path")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(name, "'..' in path")
    return "/".join(parts)


class _Writer:
    """Writes entries under ``root``, never through a link, counting the bytes written."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.real_root = Path(os.path.realpath(root))
        self.max_bytes = max_bytes
        self.written = 0
        self.links: list[tuple[str, Path]] = []

    def _inside(self, path: str | Path) -> bool:
        return Path(os.path.realpath(path)).is_relative_to(self.real_root)

    def _makedirs(self, name: str, rel_dir: str) -> Path:
        """Create ``rel_dir`` one level at a time, checking each level before creating under it."""
        path = self.root
        for part in rel_dir.split("/") if rel_dir else ():
            path = path / part
            if path.is_symlink() and not path.exists():
                raise UnsafeArchiveError(name, f"path goes through a dangling link {part!r}")
            if not path.exists():
                path.mkdir()
            if not self._inside(path):
                raise UnsafeArchiveError(name, "path resolves outside the destination")
            if not path.is_dir():
                raise UnsafeArchiveError(name, f"path goes through a non-directory {part!r}")
        return path

    def _target(self, name: str, rel: str) -> Path:
        path = self._makedirs(name, posixpath.dirname(rel)) / posixpath.basename(rel)
        if path.is_symlink():
            raise UnsafeArchiveError(name, "overwrites a link")
        return path

    def directory(self, name: str) -> None:
        rel = _safe_relpath(name)
        if rel:
            self._makedirs(name, rel)

    def file(self, name: str, src: BinaryIO, mode: int) -> None:
        rel = _safe_relpath(name)
        if not rel:
            raise UnsafeArchiveError(name, "empty file name")
        path = self._target(name, rel)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags, 0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(_CHUNK):
                self.written += len(chunk)
                if self.written > self.max_bytes:
                    raise UnsafeArchiveError(name, f"archive expands past the cap of {self.max_bytes} bytes")
                out.write(chunk)
        # keep the permission bits (no setuid/setgid/sticky), always readable by all: the runtime
        # container may run as another user than the one that unpacked the model
        os.chmod(path, (mode & 0o777) | 0o644)

    def symlink(self, name: str, target: str) -> None:
        rel = _safe_relpath(name)
        if not rel:
            raise UnsafeArchiveError(name, "empty link name")
        if not target or target.startswith(("/", "\\")) or "\x00" in target:
            raise UnsafeArchiveError(name, f"link target {target!r} is absolute")
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
        if joined == ".." or joined.startswith("../"):
            raise UnsafeArchiveError(name, f"link target {target!r} points outside the destination")
        path = self._target(name, rel)
        if path.exists():
            raise UnsafeArchiveError(name, "link replaces an existing entry")
        os.symlink(target, path)
        if not self._inside(path):
            raise UnsafeArchiveError(name, f"link target {target!r} resolves outside the destination")
        self.links.append((name, path))

    def hardlink(self, name: str, target_name: str) -> None:
        rel = _safe_relpath(name)
        try:
            target_rel = _safe_relpath(target_name)
        except UnsafeArchiveError as e:
            raise UnsafeArchiveError(name, f"hard link to {target_name!r}: {e.reason}") from None
        source = self.root / target_rel
        if not target_rel or not self._inside(source) or source.is_symlink() or not source.is_file():
            raise UnsafeArchiveError(name, f"hard link to {target_name!r} is not a file inside the archive")
        path = self._target(name, rel)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.link(source, path, follow_symlinks=False)

    def check_links(self) -> None:
        """Later entries may have changed what an earlier link resolves to: check them all again."""
        for name, path in self.links:
            if not self._inside(path):
                raise UnsafeArchiveError(name, "link resolves outside the destination")


def _extract_zip(archive: Path, writer: _Writer) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise ArchiveFormatError(f"{archive.name}: corrupt zip archive ({e})") from e
    with zf:
        for info in zf.infolist():
            name = info.filename
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if info.flag_bits & 0x1:
                raise UnsafeArchiveError(name, "encrypted entries are not supported")
            if kind and kind not in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
                raise UnsafeArchiveError(name, "device, FIFO or socket entry")
            try:
                if info.is_dir() or kind == stat.S_IFDIR:
                    writer.directory(name)
                elif kind == stat.S_IFLNK:
                    with zf.open(info) as src:
                        raw = src.read(_MAX_LINK_TARGET + 1)
                    if len(raw) > _MAX_LINK_TARGET:
                        raise UnsafeArchiveError(name, "link target too long")
                    writer.symlink(name, raw.decode("utf-8", "surrogateescape"))
                else:
                    with zf.open(info) as src:
                        writer.file(name, src, mode or 0o644)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as e:
                raise ArchiveFormatError(f"{archive.name}: cannot read entry {name!r} ({e})") from e


def _extract_tar(archive: Path, writer: _Writer) -> None:
    try:
        tf = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError) as e:
        raise ArchiveFormatError(f"{archive.name}: corrupt tar archive ({e})") from e
    with tf:
        try:
            for member in tf:
                name = member.name
                if member.isdir():
                    writer.directory(name)
                elif member.issym():
                    writer.symlink(name, member.linkname)
                elif member.islnk():
                    writer.hardlink(name, member.linkname)
                elif member.isreg():
                    src = tf.extractfile(member)
                    if src is None:
                        raise ArchiveFormatError(f"{archive.name}: cannot read entry {name!r}")
                    with src:
                        writer.file(name, src, member.mode)
                else:
                    raise UnsafeArchiveError(name, "device, FIFO or other special entry")
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as e:
            raise ArchiveFormatError(f"{archive.name}: corrupt tar archive ({e})") from e
