"""Fixtures for the MNIST example's tests: its modules, the shared data, built model stores."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "examples" / "mnist"
# The example's scripts import each other by plain name (``from data import ...``), as they do when run.
if str(EXAMPLE_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLE_DIR))


@pytest.fixture(scope="session")
def example_dir() -> Path:
    return EXAMPLE_DIR


@pytest.fixture(scope="session")
def mnist_data(shared_dir: Path) -> ModuleType:
    import data

    return data


@pytest.fixture(scope="session")
def heldout(mnist_data: ModuleType) -> tuple:
    return mnist_data.heldout_split()


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed layout (config/config.properties + model-store/mnist.mar) from the real archiver."""
    import build_model_store

    return build_model_store.build_model_store(tmp_path_factory.mktemp("mnist-store"))


class RuntimeProcess:
    """``python -m isvc_runtime`` on a free loopback port; its log is kept for failure messages."""

    def __init__(self, model_store: Path, log_path: Path, *extra_args: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [sys.executable, "-m", "isvc_runtime", "--model-store", str(model_store)]
        command += ["--host", "127.0.0.1", "--http-port", str(self.port), *extra_args]
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"runtime exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        pytest.fail(f"runtime not ready after {timeout_s:.0f}s:\n{self.log()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def start_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RuntimeProcess]]:
    started: list[RuntimeProcess] = []

    def start(model_store: Path, *extra_args: str) -> RuntimeProcess:
        runtime = RuntimeProcess(
            model_store, tmp_path_factory.mktemp("runtime-log") / "runtime.log", *extra_args
        )
        started.append(runtime)
        runtime.wait_ready()
        return runtime

    yield start
    for runtime in started:
        runtime.stop()


@pytest.fixture(scope="session")
def mnist_runtime(model_store: Path, start_runtime: Callable[..., RuntimeProcess]) -> RuntimeProcess:
    """The example's store served as the seed's InferenceService ``torchserve`` would serve it."""
    return start_runtime(model_store, "--model-name", "torchserve")
