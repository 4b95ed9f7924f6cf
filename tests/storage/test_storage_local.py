"""Local sources (absolute paths, file://, pvc://), atomic placement and the command line's errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from isvc_runtime.storage.errors import StorageError, redact_uri, scrub
from isvc_runtime.storage.placement import COMPLETE_MARKER, MOVING_JOURNAL, STAGING_PREFIX, is_complete, place
from isvc_runtime.storage.progress import Progress
from storage_support import clean_env, run_initializer, tree_bytes, write_tar


def test_absolute_path_and_file_uri_copy_the_layout(
    model_files: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    root, files = model_files
    for src, dest in ((str(root), tmp_path / "a"), (f"file://{root}", tmp_path / "b")):
        result = run_initializer(src, dest, clean_env())
        assert result.returncode == 0, result.stderr
        assert tree_bytes(dest) == files
        assert is_complete(dest)


def test_files_on_the_same_filesystem_are_hard_linked_unless_copy_is_asked(
    model_files: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    root, _files = model_files
    mar = root / "model-store" / "mnist.mar"
    assert run_initializer(str(root), tmp_path / "linked", clean_env()).returncode == 0
    assert (
        run_initializer(str(root), tmp_path / "copied", clean_env(STORAGE_LOCAL_MODE="copy")).returncode == 0
    )
    same_fs = mar.stat().st_dev == tmp_path.stat().st_dev
    assert ((tmp_path / "linked/model-store/mnist.mar").stat().st_ino == mar.stat().st_ino) == same_fs
    assert (tmp_path / "copied/model-store/mnist.mar").stat().st_ino != mar.stat().st_ino


def test_pvc_uri_maps_to_the_claim_mount(model_files: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    root, files = model_files
    env = clean_env(PVC_MOUNT_ROOT=str(root.parent))
    result = run_initializer(f"pvc://my-claim/{root.name}", tmp_path / "out", env)
    assert result.returncode == 0, result.stderr
    assert tree_bytes(tmp_path / "out") == files
    escaping = run_initializer("pvc://my-claim/../../etc", tmp_path / "x", env)
    assert escaping.returncode == 1 and "climbs out of the claim" in escaping.stderr


def test_local_tgz_is_extracted_and_the_source_kept(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "m.tgz", [("model-store/x.mar", b"mar")], mode="w:gz")
    result = run_initializer(str(archive), tmp_path / "out", clean_env())
    assert result.returncode == 0, result.stderr
    assert tree_bytes(tmp_path / "out") == {"model-store/x.mar": b"mar"}
    assert archive.is_file()


def test_unsafe_local_archive_is_refused_naming_the_entry(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "evil.tar", [("../../outside.txt", b"x")])
    dest = tmp_path / "out"
    result = run_initializer(str(archive), dest, clean_env())
    assert result.returncode == 1
    assert "'../../outside.txt'" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert [p for p in dest.iterdir() if not p.name.startswith(".")] == []


@pytest.mark.parametrize(
    "src,message",
    [
        ("ftp://host/model", "unsupported storage URI scheme ftp://"),
        ("hdfs://nn/model", "unsupported storage URI scheme hdfs://"),
        ("/definitely/not/here", "no such file or directory"),
        ("relative/missing", "not a URI or an absolute path"),
    ],
)
def test_bad_sources_exit_non_zero_with_one_line(src: str, message: str, tmp_path: Path) -> None:
    result = run_initializer(src, tmp_path / "out", clean_env())
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("storage-initializer: error: ") and message in lines[0]


def test_rerun_with_the_same_source_keeps_the_model(
    model_files: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    root, files = model_files
    dest = tmp_path / "out"
    assert run_initializer(str(root), dest, clean_env()).returncode == 0
    marker = (dest / COMPLETE_MARKER).read_text()
    again = run_initializer(str(root), dest, clean_env())
    assert again.returncode == 0 and "already holds" in again.stderr
    assert (dest / COMPLETE_MARKER).read_text() == marker
    assert tree_bytes(dest) == files


def test_a_new_source_replaces_the_previous_model(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    (one / "model-store").mkdir(parents=True)
    (one / "model-store" / "a.mar").write_bytes(b"a")
    two.mkdir()
    (two / "b.mar").write_bytes(b"b")
    dest = tmp_path / "out"
    assert run_initializer(str(one), dest, clean_env()).returncode == 0
    assert run_initializer(str(two), dest, clean_env()).returncode == 0
    assert tree_bytes(dest) == {"b.mar": b"b"}
    assert json.loads((dest / COMPLETE_MARKER).read_text())["entries"] == ["b.mar"]


def test_foreign_content_in_the_destination_is_not_overwritten(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "m.mar").write_bytes(b"m")
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    result = run_initializer(str(src), dest, clean_env())
    assert result.returncode == 1 and "is not empty" in result.stderr
    assert tree_bytes(dest) == {"notes.txt": b"mine"}


def test_interrupted_final_moves_are_undone_before_the_next_run(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    # what a kill between two renames of the final step leaves: one entry moved, journal present
    (dest / "config").mkdir()
    (dest / "config" / "config.properties").write_text("half")
    (dest / MOVING_JOURNAL).write_text(json.dumps(["config", "model-store"]))
    (dest / f"{STAGING_PREFIX}abc" / "model" / "model-store").mkdir(parents=True)

    def fill(model: Path) -> None:
        (model / "model-store").mkdir()
        (model / "model-store" / "m.mar").write_bytes(b"new")

    assert place(dest, "file:///src", fill) is True
    assert sorted(p.name for p in dest.iterdir()) == [COMPLETE_MARKER, "model-store"]


def test_failure_while_filling_leaves_the_destination_as_it_was(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()

    def fill(model: Path) -> None:
        (model / "partial.bin").write_bytes(b"half")
        raise StorageError("connection lost")

    with pytest.raises(StorageError):
        place(dest, "s3://b/p", fill)
    assert list(dest.iterdir()) == []


def test_progress_prints_at_most_one_line_per_interval() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = Progress(total=100 * 1024 * 1024, interval=5.0, stream=out, clock=lambda: now[0])
    for _ in range(20):  # 100 MiB over 10 s of fake time, one update per 0.5 s
        now[0] += 0.5
        progress.update(5 * 1024 * 1024)
    lines = out.getvalue().splitlines()
    assert lines == [
        "storage-initializer: 50.0 MiB / 100.0 MiB (50%) at 10.0 MiB/s, ETA 5s",
        "storage-initializer: 100.0 MiB / 100.0 MiB (100%) at 10.0 MiB/s",
    ]


def test_secrets_are_scrubbed_from_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG")
    message = "failed https://u:p@h/x?sig=1 with key wJalrXUtnFEMI/K7MDENG\nsecond line"
    assert scrub(message) == "failed https://h/x?REDACTED with key *** second line"
    assert redact_uri("https://user:pw@example.com/m.tgz?token=abc") == "https://example.com/m.tgz?REDACTED"
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in scrub(repr(message))


def test_the_initializer_imports_no_torch() -> None:
    code = (
        "import sys, isvc_runtime.storage.__main__, isvc_runtime.storage.initializer, "
        "isvc_runtime.storage.s3, isvc_runtime.storage.gcs, isvc_runtime.storage.web; "
        "isvc_runtime.storage.s3.make_client(); isvc_runtime.storage.gcs.make_client(); "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
