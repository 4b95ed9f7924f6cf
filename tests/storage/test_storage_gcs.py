"""gs:// through google-cloud-storage against gcp-storage-emulator (STORAGE_EMULATOR_HOST)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from isvc_runtime.storage.placement import COMPLETE_MARKER
from storage_support import clean_env, run_initializer, tree_bytes


def _bucket(gcs_client: Any, files: dict[str, bytes], prefix: str) -> str:
    name = f"models-{uuid.uuid4().hex[:10]}"
    bucket = gcs_client.create_bucket(name)
    for rel, data in files.items():
        bucket.blob(prefix + rel).upload_from_string(data)
    return name


def test_gcs_prefix_copies_the_torchserve_store_anonymously(
    gcs_client: Any, gcs_host: str, model_files: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    _root, files = model_files
    bucket = _bucket(gcs_client, files, "models/torchserve/image_classifier/")
    _bucket_sibling = gcs_client.bucket(bucket).blob("models/torchserve/image_classifier_v2/x.txt")
    _bucket_sibling.upload_from_string(b"not ours")
    dest = tmp_path / "mnt-models"
    dest.mkdir()
    uri = f"gs://{bucket}/models/torchserve/image_classifier"
    result = run_initializer(uri, dest, clean_env(STORAGE_EMULATOR_HOST=gcs_host))
    assert result.returncode == 0, result.stderr
    assert tree_bytes(dest) == files
    assert json.loads((dest / COMPLETE_MARKER).read_text())["source"] == uri


def test_gcs_trailing_slash_prefix_and_single_object(
    gcs_client: Any, gcs_host: str, model_files: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    _root, files = model_files
    bucket = _bucket(gcs_client, files, "m/")
    env = clean_env(STORAGE_EMULATOR_HOST=gcs_host)
    result = run_initializer(f"gs://{bucket}/m/", tmp_path / "a", env)
    assert result.returncode == 0, result.stderr
    assert tree_bytes(tmp_path / "a") == files
    result = run_initializer(f"gs://{bucket}/m/model-store/mnist.mar", tmp_path / "b", env)
    assert result.returncode == 0, result.stderr
    assert tree_bytes(tmp_path / "b") == {"mnist.mar": files["model-store/mnist.mar"]}


def test_gcs_empty_prefix_is_an_error(gcs_client: Any, gcs_host: str, tmp_path: Path) -> None:
    bucket = _bucket(gcs_client, {"a.txt": b"a"}, "")
    result = run_initializer(
        f"gs://{bucket}/missing", tmp_path / "out", clean_env(STORAGE_EMULATOR_HOST=gcs_host)
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"storage-initializer: error: gs://{bucket}/missing: no objects found under this prefix"
    ]


def test_gcs_missing_bucket_is_a_single_line_error(gcs_host: str, tmp_path: Path) -> None:
    result = run_initializer(
        "gs://no-such-bucket-x/m", tmp_path / "out", clean_env(STORAGE_EMULATOR_HOST=gcs_host)
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "404" in lines[0], result.stderr


def test_gcs_unusable_credentials_file_is_reported_without_its_content(gcs_host: str, tmp_path: Path) -> None:
    creds = tmp_path / "sa.json"
    creds.write_text(json.dumps({"type": "service_account", "private_key": "-----BEGIN hush-hush"}))
    env = clean_env(STORAGE_EMULATOR_HOST=gcs_host, GOOGLE_APPLICATION_CREDENTIALS=str(creds))
    result = run_initializer("gs://bucket/m", tmp_path / "out", env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "GOOGLE_APPLICATION_CREDENTIALS is unusable" in lines[0], result.stderr
    assert "hush-hush" not in result.stderr
