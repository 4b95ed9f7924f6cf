"""The runtime server as a process on a loopback port (``python -m isvc_runtime``), and model archives
built with the real ``torch-model-archiver`` and the MNIST example's own store script."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx

from e2e.processes import LoggedProcess, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
ARCHIVER = Path(sys.executable).parent / "torch-model-archiver"
CLIENT_CONNECTIONS = 64  # more than any test's threads sharing one RuntimeProcess.client


def runtime_command(model_store: Path, port: int, *args: str) -> list[str]:
    """``python -m isvc_runtime`` serving ``model_store`` on 127.0.0.1:``port``, plus ``args``."""
    return [
        sys.executable,
        "-m",
        "isvc_runtime",
        "--model-store",
        str(model_store),
        "--host",
        "127.0.0.1",
        "--http-port",
        str(port),
        *args,
    ]


class RuntimeProcess(LoggedProcess):
    """``python -m isvc_runtime`` on 127.0.0.1; its log is kept in ``log_path`` for assertions."""

    def __init__(
        self, model_store: Path, log_path: Path, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(runtime_command(model_store, self.port, *args), log_path, env)
        # Tests share this client across up to 32 threads. httpcore 1.0.9 closes an idle connection
        # whenever the pool holds more than max_keepalive_connections connections (it counts them all,
        # idle or not, connection_pool.py `_assign_requests_to_connections`), including one just handed
        # to a thread that has not started its request yet: that thread then reads a closed socket
        # (EBADF). With keep-alive as large as the pool, the pool never closes a connection it handed out.
        pool = httpx.Limits(max_connections=CLIENT_CONNECTIONS, max_keepalive_connections=CLIENT_CONNECTIONS)
        self.client = httpx.Client(base_url=self.url, timeout=30, limits=pool)

    def wait_live(self, timeout: float = 60) -> None:
        self._wait(lambda r: r.status_code == 200, "/v2/health/live", timeout)

    def wait_ready(self, timeout: float = 90) -> None:
        self._wait(lambda r: r.status_code == 200, "/v2/health/ready", timeout)

    def wait_loaded(self, timeout: float = 90) -> None:
        """Until no model is still loading (loaded or failed)."""

        def settled(response: httpx.Response) -> bool:
            return response.status_code == 200 or "loading" not in response.text

        self._wait(settled, "/v2/health/ready", timeout)

    def _wait(self, done: Callable[[httpx.Response], bool], path: str, timeout: float) -> None:
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
        self.client.close()
        return super().stop(timeout)

    def __enter__(self) -> RuntimeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serving(process: RuntimeProcess, *, until: str = "ready") -> Iterator[RuntimeProcess]:
    """For module fixtures (``yield from serving(...)``): the process once ready (``until="loaded"``: once
    no model is still loading), and on the way out the check that it stopped cleanly (exit status 0)."""
    try:
        process.wait_loaded() if until == "loaded" else process.wait_ready()
        yield process
    finally:
        assert process.stop() == 0


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
