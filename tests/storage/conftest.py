"""Real servers on loopback for the storage tests: moto's S3 server, gcp-storage-emulator, and the
TLS file server in fileserver.py with a throwaway CA. Every process started here is stopped here."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
FILESERVER = HERE / "fileserver.py"
sys.path.insert(0, str(HERE))

from fileserver import make_tls_material  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}: {proc.args}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start within {timeout}s")


@contextlib.contextmanager
def running(
    cmd: list[str], port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, proc)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any cloud credentials, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "S3_", "GOOGLE_", "STORAGE_", "GCLOUD"))
        and k not in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")
    }
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["STORAGE_RETRY_BASE_SECONDS"] = "0.05"
    env.update(extra)
    return env


def run_initializer(
    src: str, dest: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "isvc_runtime.storage", src, str(dest)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_model_store(root: Path) -> dict[str, bytes]:
    """The seed's layout in small synthetic files: config/config.properties + model-store/*.mar."""
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {
        "config/config.properties": b"inference_address=http://0.0.0.0:8085\nmodel_store=/mnt/models/model-store\n"
        b'model_snapshot={"name":"startup.cfg","modelCount":1}\n',
    }
    mar = root / "model-store" / "mnist.mar"
    mar.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(mar, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("MAR-INF/MANIFEST.json", '{"model": {"modelName": "mnist", "handler": "h.py"}}')
        zf.writestr("mnist_cnn.pt", os.urandom(200_000))
    files["model-store/mnist.mar"] = mar.read_bytes()
    (root / "config").mkdir(exist_ok=True)
    (root / "config" / "config.properties").write_bytes(files["config/config.properties"])
    return files


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Visible files under root (hidden bookkeeping like the completion marker left out)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not any(part.startswith(".") for part in rel.split("/")):
            out[rel] = path.read_bytes()
    return out


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


# --- HTTPS: fileserver.py with a throwaway CA ---------------------------------------------------------


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_tls_material(tmp_path_factory.mktemp("tls"))


FileServer = Callable[..., contextlib.AbstractContextManager[str]]


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
