"""Archives that cannot load: the server stays up, serves the good model, and says why the others
are not ready (readiness stays false)."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtime_support import RuntimeProcess, asset_archive, build_archive, serving

MANIFEST = {
    "runtime": "python",
    "model": {"modelName": "evil", "handler": "base_handler", "modelVersion": "1.0"},
}


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, weights: dict[str, Path]) -> Path:
    root = tmp_path_factory.mktemp("failing-store")
    store = root / "store"
    good = asset_archive(store, "good", "batch_report_handler.py", "scale_sum.py", weights["scale_sum"])
    (store / "truncated.mar").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    manifest = json.dumps(MANIFEST).encode()
    _zip(store / "traversal.mar", {"MAR-INF/MANIFEST.json": manifest, "../escape.py": b"print('escaped')\n"})
    with tarfile.open(store / "absolute.tar.gz", "w:gz") as archive:
        info = tarfile.TarInfo("/tmp/isvc-absolute-escape.py")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"x=1"))
    _zip(store / "nomanifest.mar", {"model.py": b"x = 1\n"})
    asset_archive(store, "broken", "broken_init_handler.py", "scale_sum.py", weights["scale_sum"])
    two_classes = root / "two_models.py"
    two_classes.write_text(
        "from torch import nn\n\nclass A(nn.Module):\n    pass\n\nclass B(nn.Module):\n    pass\n"
    )
    build_archive(
        store,
        "ambiguous",
        handler="base_handler",
        model_file=two_classes,
        serialized_file=weights["scale_sum"],
    )
    return store


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[RuntimeProcess]:
    yield from serving(RuntimeProcess(store, store.parent / "runtime.log"), until="loaded")


def test_server_is_not_ready_and_names_every_failed_model(server: RuntimeProcess) -> None:
    response = server.client.get("/v2/health/ready")
    assert response.status_code == 503
    reasons = response.json()["error"]
    for name in ("truncated", "traversal", "absolute", "nomanifest", "broken", "ambiguous"):
        assert f"{name}:" in reasons
    assert "good:" not in reasons
    assert server.client.get("/ping").status_code == 503
    assert server.client.get("/v2/health/live").status_code == 200


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ("truncated", "truncated.mar"),
        ("traversal", "../escape.py"),
        ("absolute", "/tmp/isvc-absolute-escape.py"),
        ("nomanifest", "MANIFEST.json"),
        ("broken", "weights are corrupt"),
        ("ambiguous", "exactly one nn.Module"),
    ],
)
def test_failed_model_reports_why_and_refuses_predictions(
    server: RuntimeProcess, model: str, words: str
) -> None:
    ready = server.client.get(f"/v2/models/{model}/ready")
    assert ready.status_code == 503
    assert ready.json()["ready"] is False and words in ready.json()["error"]
    assert words in server.log()
    predict = server.client.post(f"/v1/models/{model}:predict", json={"instances": [[1, 2]]})
    assert predict.status_code == 503 and words in predict.json()["error"]
    good = server.client.post("/v1/models/good:predict", json={"instances": [[1, 2]]})
    assert good.status_code == 200 and good.json()["predictions"][0]["value"] == 6.0


def test_unsafe_entries_were_never_written(store: Path) -> None:
    assert not (store.parent / "escape.py").exists()
    assert not Path("/tmp/isvc-absolute-escape.py").exists()
