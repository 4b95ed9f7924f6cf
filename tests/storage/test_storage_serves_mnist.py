"""End to end: the real MNIST model store (built by the real torch-model-archiver) goes into S3, GCS and
an https server; the initializer copies it into an existing directory (the emptyDir), and the runtime
process serves the seed request from there: {"predictions": [2]}."""

from __future__ import annotations

import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from isvc_runtime.storage.placement import COMPLETE_MARKER
from storage_support import FileServer, clean_env, run_initializer, tree_bytes
from support.runtime import RuntimeProcess

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mnist_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sys.path.insert(0, str(REPO / "examples" / "mnist"))
    try:
        import build_model_store
    finally:
        sys.path.remove(str(REPO / "examples" / "mnist"))
    return build_model_store.build_model_store(tmp_path_factory.mktemp("mnist-store"))


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    runtimes: list[RuntimeProcess] = []

    def start(model_dir: Path) -> str:
        runtime = RuntimeProcess(model_dir, tmp_path / "runtime.log", "--model-name", "torchserve")
        runtimes.append(runtime)
        runtime.wait_ready(timeout=120)
        return runtime.url

    yield start
    for runtime in runtimes:
        runtime.stop(timeout=20)


def _upload_s3(s3_client: Any, store: Path) -> str:
    bucket = f"kfserving-examples-{uuid.uuid4().hex[:8]}"
    s3_client.create_bucket(Bucket=bucket)
    for path in store.rglob("*"):
        if path.is_file():
            key = f"models/torchserve/image_classifier/{path.relative_to(store).as_posix()}"
            s3_client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    return f"s3://{bucket}/models/torchserve/image_classifier"


def _upload_gcs(gcs_client: Any, store: Path) -> str:
    bucket = gcs_client.create_bucket(f"kfserving-examples-{uuid.uuid4().hex[:8]}")
    for path in store.rglob("*"):
        if path.is_file():
            name = f"models/torchserve/image_classifier/{path.relative_to(store).as_posix()}"
            bucket.blob(name).upload_from_filename(str(path))
    return f"gs://{bucket.name}/models/torchserve/image_classifier"


def _predict_digit(url: str, shared_dir: Path) -> Any:
    body = (shared_dir / "data" / "requests" / "v1" / "mnist.json").read_bytes()
    response = httpx.post(
        f"{url}/v1/models/mnist:predict",
        content=body,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("source", ["s3", "gs", "https"])
def test_initializer_fetches_the_mnist_store_and_the_runtime_serves_the_mnist_request(
    source: str,
    request: pytest.FixtureRequest,
    mnist_store: Path,
    shared_dir: Path,
    serve: Any,
    tmp_path: Path,
) -> None:
    if source == "s3":
        uri = _upload_s3(request.getfixturevalue("s3_client"), mnist_store)
        env = request.getfixturevalue("s3_env")
        result_ctx = None
    elif source == "gs":
        uri = _upload_gcs(request.getfixturevalue("gcs_client"), mnist_store)
        env = clean_env(STORAGE_EMULATOR_HOST=request.getfixturevalue("gcs_host"))
        result_ctx = None
    else:
        served = tmp_path / "www"
        served.mkdir()
        with tarfile.open(served / "image_classifier.tar.gz", "w:gz") as tf:
            for part in ("config", "model-store"):
                tf.add(mnist_store / part, arcname=part)
        tls = request.getfixturevalue("tls")
        env = clean_env(STORAGE_CA_BUNDLE=str(tls["ca"]))
        file_server: FileServer = request.getfixturevalue("file_server")
        result_ctx = file_server(served)
    dest = tmp_path / "mnt-models"
    dest.mkdir()  # the emptyDir exists before the init container runs
    if result_ctx is None:
        result = run_initializer(uri, dest, env)
    else:
        with result_ctx as base:
            result = run_initializer(f"{base}/image_classifier.tar.gz", dest, env)
    assert result.returncode == 0, result.stderr
    assert tree_bytes(dest) == tree_bytes(mnist_store)
    assert (dest / COMPLETE_MARKER).is_file()
    url = serve(dest)
    assert _predict_digit(url, shared_dir) == {"predictions": [2]}
