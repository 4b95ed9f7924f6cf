"""Helpers for the runtime tests: the real server as a subprocess on a loopback port, and archives
built with the real ``torch-model-archiver``."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DIR = REPO_ROOT.parent / "shared"
SEED_REQUEST = SHARED_DIR / "data" / "requests" / "v1" / "mnist.json"
ASSETS = Path(__file__).resolve().parent / "assets"
ARCHIVER = Path(sys.executable).parent / "torch-model-archiver"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RuntimeProcess:
    """``python -m isvc_runtime`` on 127.0.0.1; its log is kept in ``log_path`` for assertions."""

    def __init__(
        self, model_store: Path, log_path: Path, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable,
            "-m",
            "isvc_runtime",
            "--model-store",
            str(model_store),
            "--host",
            "127.0.0.1",
            "--http-port",
            str(self.port),
            *args,
        ]
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_live(self, timeout: float = 60) -> None:
        self._wait(lambda r: r.status_code == 200, "/v2/health/live", timeout)

    def wait_ready(self, timeout: float = 90) -> None:
        self._wait(lambda r: r.status_code == 200, "/v2/health/ready", timeout)

    def wait_loaded(self, timeout: float = 90) -> None:
        """Until no model is still loading (loaded or failed)."""

        def settled(response: httpx.Response) -> bool:
            return response.status_code == 200 or "loading" not in response.text

        self._wait(settled, "/v2/health/ready", timeout)

    def _wait(self, done, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"runtime exited with {self.process.returncode}:\n{self.log()}")
            try:
                if done(self.client.get(path, timeout=2)):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"runtime not settled on {path} after {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.client.close()
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> RuntimeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def build_archive(
    export_dir: Path,
    name: str,
    *,
    handler: str | Path,
    serialized_file: Path | None = None,
    model_file: Path | None = None,
    extra_files: Sequence[Path] = (),
    archive_format: str = "default",
    version: str = "1.0",
    config_file: Path | None = None,
) -> Path:
    """Run the real ``torch-model-archiver``; return the archive path."""
    export_dir.mkdir(parents=True, exist_ok=True)
    command = [str(ARCHIVER), "--model-name", name, "--version", version, "--handler", str(handler)]
    command += ["--export-path", str(export_dir), "--archive-format", archive_format, "--force"]
    if serialized_file is not None:
        command += ["--serialized-file", str(serialized_file)]
    if model_file is not None:
        command += ["--model-file", str(model_file)]
    if extra_files:
        command += ["--extra-files", ",".join(str(p) for p in extra_files)]
    if config_file is not None:
        command += ["--config-file", str(config_file)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    suffix = {"default": ".mar", "zip-store": ".mar", "tgz": ".tar.gz", "no-archive": ""}[archive_format]
    return export_dir / f"{name}{suffix}"


def build_mnist_store(out_dir: Path) -> Path:
    """The example's seed layout (config/ + model-store/mnist.mar), built by its own script."""
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "mnist" / "build_model_store.py"), str(out_dir)],
        check=True,
        capture_output=True,
        text=True,
    )
    return out_dir


def quadrant_png(quadrant: int, *, mode: str = "L", size: int = 8) -> bytes:
    """A black image whose given quadrant is white: QuadrantNet answers ``quadrant``."""
    image = Image.new(mode, (size, size))
    half = size // 2
    left = half * (quadrant % 2)
    top = half * (quadrant // 2)
    white = 255 if mode == "L" else (255, 255, 255)
    for x in range(left, left + half):
        for y in range(top, top + half):
            image.putpixel((x, y), white)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def quadrant_tensor(quadrant: int) -> list[list[list[float]]]:
    """The same picture as a [1, 8, 8] nested list."""
    grid = [[0.0] * 8 for _ in range(8)]
    top, left = 4 * (quadrant // 2), 4 * (quadrant % 2)
    for y in range(top, top + 4):
        for x in range(left, left + 4):
            grid[y][x] = 1.0
    return [grid]
