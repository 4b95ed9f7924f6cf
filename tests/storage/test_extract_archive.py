"""extract_archive: good archives unpack; every attack is refused by name and leaves dest untouched."""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from isvc_runtime.storage.extract import (
    ArchiveFormatError,
    UnsafeArchiveError,
    detect_format,
    extract_archive,
)
from storage_support import write_tar


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _zip_symlink(zf: zipfile.ZipFile, name: str, target: str) -> None:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zf.writestr(info, target)


def _tree(root: Path) -> dict[str, bytes | str]:
    """Relative path -> file bytes, or 'dir' / 'link:TARGET'."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = path.read_bytes()
    return out


def _assert_refused(archive: Path, dest: Path, entry: str, **kwargs: int) -> None:
    with pytest.raises(UnsafeArchiveError) as excinfo:
        extract_archive(archive, dest, **kwargs)
    assert excinfo.value.entry == entry
    assert entry in str(excinfo.value)
    assert not dest.exists() or list(dest.iterdir()) == []
    # nothing left beside dest either (the staging directory is cleaned up)
    assert sorted(p.name for p in dest.parent.iterdir()) == sorted(
        p.name for p in [archive, dest] if p.exists() and p.parent == dest.parent
    )


# --- good archives ---------------------------------------------------------------------------------


def test_zip_with_stored_and_deflated_entries_unpacks_with_layout(tmp_path: Path) -> None:
    archive = tmp_path / "model.mar"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("MAR-INF/MANIFEST.json", '{"model": {}}', compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("weights.pt", b"\x00" * 5000, compress_type=zipfile.ZIP_STORED)
        zf.writestr("sub/dir/", b"")
    dest = tmp_path / "out"
    extract_archive(archive, dest)
    assert _tree(dest) == {
        "MAR-INF": "dir",
        "MAR-INF/MANIFEST.json": b'{"model": {}}',
        "weights.pt": b"\x00" * 5000,
        "sub": "dir",
        "sub/dir": "dir",
    }


@pytest.mark.parametrize(
    "mode,suffix", [("w", ".tar"), ("w:gz", ".tgz"), ("w:bz2", ".tar.bz2"), ("w:xz", ".xz")]
)
def test_tar_in_every_compression_unpacks(tmp_path: Path, mode: str, suffix: str) -> None:
    entries: list = [("config/config.properties", b"k=v\n"), ("m.bin", b"abc")]
    archive = write_tar(tmp_path / f"a{suffix}", entries, mode)
    dest = tmp_path / "out"
    extract_archive(archive, dest)
    assert (dest / "config/config.properties").read_bytes() == b"k=v\n"
    assert (dest / "m.bin").read_bytes() == b"abc"


def test_format_is_detected_by_content_not_by_name(tmp_path: Path) -> None:
    gz = write_tar(tmp_path / "misnamed.zip", [("a.txt", b"A")], "w:gz")
    zipped = tmp_path / "misnamed.tar.gz"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("b.txt", "B")
    assert detect_format(gz) == "tar"
    assert detect_format(zipped) == "zip"
    extract_archive(gz, tmp_path / "one")
    extract_archive(zipped, tmp_path / "two")
    assert (tmp_path / "one/a.txt").read_text() == "A"
    assert (tmp_path / "two/b.txt").read_text() == "B"


def test_not_an_archive_is_a_format_error(tmp_path: Path) -> None:
    junk = tmp_path / "weights.pt"
    junk.write_bytes(b"not an archive at all" * 100)
    with pytest.raises(ArchiveFormatError, match=r"weights\.pt"):
        extract_archive(junk, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_existing_empty_directory_is_filled_in_place(tmp_path: Path) -> None:
    dest = tmp_path / "mnt-models"
    dest.mkdir()
    inode = dest.stat().st_ino
    archive = write_tar(tmp_path / "a.tar", [("x/y.txt", b"y")])
    extract_archive(archive, dest)
    assert dest.stat().st_ino == inode
    assert _tree(dest) == {"x": "dir", "x/y.txt": b"y"}


def test_non_empty_destination_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep").write_text("k")
    with pytest.raises(FileExistsError):
        extract_archive(write_tar(tmp_path / "a.tar", [("x", b"x")]), dest)
    assert _tree(dest) == {"keep": b"k"}


def test_links_that_stay_inside_are_kept(tmp_path: Path) -> None:
    archive = write_tar(
        tmp_path / "a.tar",
        [
            ("data/real.bin", b"R"),
            _link("alias.bin", "data/real.bin"),
            _link("hard.bin", "data/real.bin", tarfile.LNKTYPE),
        ],
    )
    dest = tmp_path / "out"
    extract_archive(archive, dest)
    assert os.readlink(dest / "alias.bin") == "data/real.bin"
    assert (dest / "alias.bin").read_bytes() == b"R"
    assert (dest / "hard.bin").stat().st_ino == (dest / "data/real.bin").stat().st_ino


def test_setuid_bits_are_dropped(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "a.tar", [("run.sh", b"#!")], file_mode=0o4755)
    extract_archive(archive, tmp_path / "out")
    assert stat.S_IMODE((tmp_path / "out/run.sh").stat().st_mode) == 0o755


# --- attacks ---------------------------------------------------------------------------------------


def test_zip_slip_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "slip.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("good.txt", "fine")
        zf.writestr("../../evil.txt", "pwned")
    _assert_refused(archive, tmp_path / "out", "../../evil.txt")
    assert not (tmp_path.parent / "evil.txt").exists()


def test_zip_absolute_path_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "abs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        # ZipFile.writestr strips a leading '/', so write the name through a ZipInfo we control
        info = zipfile.ZipInfo("x")
        info.filename = "/tmp/evil.txt"
        zf.writestr(info, "pwned")
    _assert_refused(archive, tmp_path / "out", "/tmp/evil.txt")


def test_tar_traversal_is_refused(tmp_path: Path) -> None:
    entries: list = [("ok.txt", b"ok"), ("a/../../escape.txt", b"pwned")]
    archive = write_tar(tmp_path / "trav.tar.gz", entries, "w:gz")
    _assert_refused(archive, tmp_path / "out", "a/../../escape.txt")
    assert not (tmp_path / "escape.txt").exists()


def test_tar_absolute_path_is_refused(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "abs.tar", [("/etc/evil.conf", b"pwned")])
    _assert_refused(archive, tmp_path / "out", "/etc/evil.conf")


def test_tar_symlink_escaping_dest_is_refused(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "link.tar", [_link("escape", "../../../etc"), ("escape/passwd", b"pwned")])
    _assert_refused(archive, tmp_path / "out", "escape")


def test_tar_absolute_symlink_is_refused(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "link.tar", [_link("etc", "/etc")])
    _assert_refused(archive, tmp_path / "out", "etc")


def test_symlink_that_escapes_only_through_another_link_is_refused(tmp_path: Path) -> None:
    # 'up' looks harmless on its own (lexically "."), but 'here' -> "." makes 'here/..' the parent of dest
    archive = write_tar(tmp_path / "chain.tar", [_link("here", "."), _link("up", "here/..")])
    _assert_refused(archive, tmp_path / "out", "up")


def test_link_made_to_escape_by_a_later_entry_is_refused(tmp_path: Path) -> None:
    # 'up' -> "a/.." is inside while 'a' does not exist; the later link 'a' -> "." makes it the parent
    entries = [_link("up", "a/.."), _link("a", "."), ("up/evil.txt", b"pwned")]
    archive = write_tar(tmp_path / "late.tar", entries)
    with pytest.raises(UnsafeArchiveError):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_zip_symlink_escaping_dest_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        _zip_symlink(zf, "model/weights", "../../../../etc/shadow")
    _assert_refused(archive, tmp_path / "out", "model/weights")


def test_hardlink_to_outside_file_is_refused(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "hard.tar", [_link("pw", "../../etc/passwd", tarfile.LNKTYPE)])
    _assert_refused(archive, tmp_path / "out", "pw")


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_device_and_fifo_entries_are_refused(tmp_path: Path, kind: bytes) -> None:
    info = tarfile.TarInfo("dev/thing")
    info.type = kind
    archive = write_tar(tmp_path / "dev.tar", [("fine.txt", b"f"), info])
    _assert_refused(archive, tmp_path / "out", "dev/thing")


def test_zip_bomb_beyond_the_cap_is_refused_by_actual_bytes(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("small.txt", b"x" * 100)
        zf.writestr("zeros.bin", b"\x00" * (8 * 1024 * 1024))
    assert archive.stat().st_size < 64 * 1024
    _assert_refused(archive, tmp_path / "out", "zeros.bin", max_bytes=4 * 1024 * 1024)


def test_zip_with_lying_size_headers_is_refused_leaving_nothing(tmp_path: Path) -> None:
    # rewrite the declared sizes to 1 byte: the cap must still be enforced on what really expands
    archive = tmp_path / "liar.zip"
    payload = b"\x00" * (6 * 1024 * 1024)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", payload)
    raw = bytearray(archive.read_bytes())
    size_le = len(payload).to_bytes(4, "little")
    assert raw.count(size_le) == 2  # local header and central directory
    raw[:] = raw.replace(size_le, (1).to_bytes(4, "little"))
    archive.write_bytes(bytes(raw))
    dest = tmp_path / "out"
    with pytest.raises((UnsafeArchiveError, ArchiveFormatError)) as excinfo:
        extract_archive(archive, dest, max_bytes=1024 * 1024)
    assert "zeros.bin" in str(excinfo.value)
    assert not dest.exists()


def test_tar_gz_bomb_beyond_the_cap_is_refused(tmp_path: Path) -> None:
    zeros = b"\x00" * 3_000_000
    archive = write_tar(tmp_path / "bomb.tgz", [("a.bin", zeros), ("b.bin", zeros)], "w:gz")
    _assert_refused(archive, tmp_path / "out", "b.bin", max_bytes=5_000_000)


def test_refusal_into_existing_mount_point_leaves_it_empty(tmp_path: Path) -> None:
    dest = tmp_path / "models"
    dest.mkdir()
    archive = write_tar(tmp_path / "trav.tar", [("ok.txt", b"ok"), ("../evil.txt", b"pwned")])
    _assert_refused(archive, dest, "../evil.txt")
    assert list(dest.iterdir()) == []


def test_extracted_files_and_dest_are_readable_by_other_users(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "a.tar", [("weights.pt", b"w")], file_mode=0o600)
    extract_archive(archive, tmp_path / "out")
    assert stat.S_IMODE((tmp_path / "out/weights.pt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
