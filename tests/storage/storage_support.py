"""Helpers of the storage tests: free ports, server processes, a clean environment, the initializer
as a process, and the seed's model-store layout in small synthetic files."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

# Re-exported for the storage tests (one implementation in e2e/processes.py).
from e2e.processes import free_port as free_port
from e2e.processes import running as running

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
FILESERVER = HERE / "storage_fileserver.py"


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


def write_tar(
    path: Path, entries: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w", file_mode: int = 0o644
) -> Path:
    """A tar archive at ``path`` (``mode``: ``w``, ``w:gz``, ...): each entry a prepared TarInfo (links,
    odd types) or ``(name, bytes)``, a regular file with permission bits ``file_mode``."""
    with tarfile.open(path, mode) as tf:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tf.addfile(entry)
            else:
                name, data = entry
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = file_mode
                tf.addfile(info, io.BytesIO(data))
    return path


def served_dir(tmp_path: Path, files: dict[str, bytes] | None = None) -> Path:
    """A fresh directory ``tmp_path/www`` for a file server to serve, holding ``files`` (name -> bytes)."""
    served = tmp_path / "www"
    served.mkdir()
    for name, data in (files or {}).items():
        (served / name).write_bytes(data)
    return served


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Visible files under root (hidden bookkeeping like the completion marker left out)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not any(part.startswith(".") for part in rel.split("/")):
            out[rel] = path.read_bytes()
    return out


FileServer = Callable[..., contextlib.AbstractContextManager[str]]
