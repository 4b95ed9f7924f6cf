"""Real servers on loopback for the storage tests: moto's S3 server, gcp-storage-emulator, and the
TLS file server in storage_fileserver.py with a throwaway CA. Every process started here is stopped here."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from storage_fileserver import make_tls_material
from storage_support import (
    FILESERVER,
    VENV_BIN,
    FileServer,
    clean_env,
    free_port,
    running,
    write_model_store,
)


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("seed-layout")
    return root, write_model_store(root)


# --- S3: moto server ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    with running([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], port):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def s3_env(s3_endpoint: str) -> dict[str, str]:
    return clean_env(
        AWS_ENDPOINT_URL=s3_endpoint,
        AWS_ACCESS_KEY_ID="AKIAEXAMPLEKEYID0001",
        AWS_SECRET_ACCESS_KEY="s3cr3t-value-never-printed",
        AWS_REGION="us-east-1",
    )


@pytest.fixture(scope="session")
def s3_client(s3_endpoint: str, s3_env: dict[str, str]):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"],
    )


# --- GCS: gcp-storage-emulator -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gcs_host() -> Iterator[str]:
    port = free_port()
    cmd = [
        str(VENV_BIN / "gcp-storage-emulator"),
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-M",
        "-q",
    ]
    with running(cmd, port):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def gcs_client(gcs_host: str):  # type: ignore[no-untyped-def]
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs_host}
    )


# --- HTTPS: storage_fileserver.py with a throwaway CA ---


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_tls_material(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def file_server(tls: dict[str, Path]) -> FileServer:
    """``with file_server(root, tls=True, fail_first=0, rate=None, header=None) as base_url: ...``"""

    @contextlib.contextmanager
    def start(
        root: Path,
        *,
        tls_on: bool = True,
        fail_first: int = 0,
        rate: float | None = None,
        header: str | None = None,
    ) -> Iterator[str]:
        port = free_port()
        cmd = [sys.executable, str(FILESERVER), str(root), str(port), "--fail-first", str(fail_first)]
        if tls_on:
            cmd += ["--cert", str(tls["cert"]), "--key", str(tls["key"])]
        if rate:
            cmd += ["--bytes-per-second", str(rate)]
        if header:
            cmd += ["--require-header", header]
        with running(cmd, port):
            yield f"{'https' if tls_on else 'http'}://127.0.0.1:{port}"

    return start
