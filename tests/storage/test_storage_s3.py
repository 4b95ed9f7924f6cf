"""s3:// through boto3 against moto's S3 server on loopback."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from isvc_runtime.storage.placement import COMPLETE_MARKER
from storage_support import VENV_BIN, clean_env, free_port, run_initializer, running, tree_bytes


def _bucket(s3_client: Any, files: dict[str, bytes], prefix: str, acl: str = "private") -> str:
    name = f"models-{uuid.uuid4().hex[:10]}"
    s3_client.create_bucket(Bucket=name, ACL=acl)
    for rel, data in files.items():
        s3_client.put_object(Bucket=name, Key=prefix + rel, Body=data, ACL=acl)
    return name


def test_s3_prefix_copies_the_torchserve_store_with_relative_paths(
    s3_client: Any, s3_env: dict[str, str], model_files: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    _root, files = model_files
    bucket = _bucket(s3_client, files, "torchserve/mnist/")
    s3_client.put_object(Bucket=bucket, Key="torchserve/mnist-v2/other.txt", Body=b"sibling")
    dest = tmp_path / "mnt-models"
    dest.mkdir()
    result = run_initializer(f"s3://{bucket}/torchserve/mnist", dest, s3_env)
    assert result.returncode == 0, result.stderr
    assert tree_bytes(dest) == files
    marker = json.loads((dest / COMPLETE_MARKER).read_text())
    assert marker["source"] == f"s3://{bucket}/torchserve/mnist"
    assert marker["entries"] == ["config", "model-store"]
    assert sorted(p.name for p in dest.iterdir()) == [COMPLETE_MARKER, "config", "model-store"]
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in result.stderr


def test_s3_public_bucket_is_read_anonymously_without_credentials(
    s3_client: Any, s3_endpoint: str, model_files: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    _root, files = model_files
    bucket = _bucket(s3_client, files, "", acl="public-read")
    env = clean_env(S3_ENDPOINT=s3_endpoint.removeprefix("http://"), S3_USE_HTTPS="0")
    result = run_initializer(f"s3://{bucket}", tmp_path / "out", env)
    assert result.returncode == 0, result.stderr
    assert tree_bytes(tmp_path / "out") == files


def test_s3_private_object_without_credentials_is_access_denied(
    s3_client: Any, s3_endpoint: str, tmp_path: Path
) -> None:
    bucket = _bucket(s3_client, {"m.bin": b"secret weights"}, "", acl="public-read")
    s3_client.put_object_acl(Bucket=bucket, Key="m.bin", ACL="private")
    result = run_initializer(f"s3://{bucket}", tmp_path / "out", clean_env(AWS_ENDPOINT_URL=s3_endpoint))
    assert result.returncode == 1
    expected = f"s3://{bucket}/m.bin: HTTP 403: access denied, check the S3 credentials"
    assert result.stderr.strip().splitlines() == [f"storage-initializer: error: {expected}"]


def test_s3_single_archive_object_is_extracted(
    s3_client: Any, s3_env: dict[str, str], tmp_path: Path
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = b"weights" * 1000
        info = tarfile.TarInfo("model-store/m.bin")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    bucket = _bucket(s3_client, {"bundle.tar.gz": buf.getvalue()}, "")
    result = run_initializer(f"s3://{bucket}/bundle.tar.gz", tmp_path / "out", s3_env)
    assert result.returncode == 0, result.stderr
    assert tree_bytes(tmp_path / "out") == {"model-store/m.bin": b"weights" * 1000}


def test_s3_single_mar_object_is_kept_by_name(s3_client: Any, s3_env: dict[str, str], tmp_path: Path) -> None:
    bucket = _bucket(s3_client, {"store/mnist.mar": b"PK\x05\x06" + b"\x00" * 18}, "")
    result = run_initializer(f"s3://{bucket}/store/mnist.mar", tmp_path / "out", s3_env)
    assert result.returncode == 0, result.stderr
    assert tree_bytes(tmp_path / "out") == {"mnist.mar": b"PK\x05\x06" + b"\x00" * 18}


def test_s3_empty_prefix_is_an_error_not_an_empty_model(
    s3_client: Any, s3_env: dict[str, str], tmp_path: Path
) -> None:
    bucket = _bucket(s3_client, {"a/file": b"x"}, "")
    dest = tmp_path / "out"
    result = run_initializer(f"s3://{bucket}/no/such/prefix", dest, s3_env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "no objects found" in lines[0] and f"s3://{bucket}/no/such/prefix" in lines[0]
    assert not (dest / COMPLETE_MARKER).exists()
    assert [p for p in dest.iterdir() if not p.name.startswith(".")] == []


def test_s3_missing_bucket_is_a_single_line_error(s3_env: dict[str, str], tmp_path: Path) -> None:
    result = run_initializer("s3://no-such-bucket-here/model", tmp_path / "out", s3_env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "NoSuchBucket" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_s3_unreachable_endpoint_is_retried_then_reported(tmp_path: Path) -> None:
    env = clean_env(AWS_ENDPOINT_URL="http://127.0.0.1:9", STORAGE_RETRIES="2")
    result = run_initializer("s3://bucket/model", tmp_path / "out", env)
    assert result.returncode == 1
    assert result.stderr.count("retry ") == 2
    assert "gave up after 3 attempts" in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("key", ["../escape.txt", "a/../../escape.txt"])
def test_s3_keys_that_climb_out_are_refused(
    s3_client: Any, s3_env: dict[str, str], tmp_path: Path, key: str
) -> None:
    bucket = _bucket(s3_client, {"ok.txt": b"ok", key: b"pwned"}, "")
    dest = tmp_path / "sub" / "out"
    result = run_initializer(f"s3://{bucket}", dest, s3_env)
    assert result.returncode == 1, result.stderr
    assert "refusing object" in result.stderr
    assert not (tmp_path / "sub" / "escape.txt").exists()
    assert not (dest / COMPLETE_MARKER).exists()


@pytest.fixture(scope="module")
def s3_tls_endpoint(tls: dict[str, Path], s3_env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    cmd = [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    cmd += ["-c", str(tls["cert"]), "-k", str(tls["key"])]
    with running(cmd, port):
        endpoint = f"https://127.0.0.1:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            verify=str(tls["ca"]),
            aws_access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"],
        )
        client.create_bucket(Bucket="tls-models")
        client.put_object(Bucket="tls-models", Key="m/model.mar", Body=b"over tls")
        yield endpoint


def test_s3_over_tls_with_a_ca_bundle(
    s3_tls_endpoint: str, s3_env: dict[str, str], tls: dict[str, Path], tmp_path: Path
) -> None:
    env = {**s3_env, "AWS_ENDPOINT_URL": s3_tls_endpoint, "AWS_CA_BUNDLE": str(tls["ca"])}
    result = run_initializer("s3://tls-models/m", tmp_path / "out", env)
    assert result.returncode == 0, result.stderr
    assert tree_bytes(tmp_path / "out") == {"model.mar": b"over tls"}


def test_s3_untrusted_certificate_fails_at_once(
    s3_tls_endpoint: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    result = run_initializer(
        "s3://tls-models/m", tmp_path / "out", {**s3_env, "AWS_ENDPOINT_URL": s3_tls_endpoint}
    )
    assert result.returncode == 1
    expected = "listing s3://tls-models/m: TLS verification failed (set AWS_CA_BUNDLE to trust a CA)"
    assert result.stderr.strip().splitlines() == [f"storage-initializer: error: {expected}"]


def test_s3_verify_ssl_off_says_so_once(s3_tls_endpoint: str, s3_env: dict[str, str], tmp_path: Path) -> None:
    host = s3_tls_endpoint.removeprefix("https://")
    env = {**s3_env, "AWS_ENDPOINT_URL": "", "S3_ENDPOINT": host, "S3_USE_HTTPS": "1", "S3_VERIFY_SSL": "0"}
    result = run_initializer("s3://tls-models/m", tmp_path / "out", env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[0] == (
        "storage-initializer: TLS certificate verification is off (S3_VERIFY_SSL=0)"
    )
    assert "InsecureRequestWarning" not in result.stderr
    assert tree_bytes(tmp_path / "out") == {"model.mar": b"over tls"}
