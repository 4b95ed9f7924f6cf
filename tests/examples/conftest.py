"""Fixtures for the MNIST example's tests: its modules, the shared data, built model stores."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from support.runtime import RuntimeProcess

EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "examples" / "mnist"
TS_HANDLER = Path(__file__).resolve().parent / "handlers" / "ts_mnist_handler.py"
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


@pytest.fixture(scope="session")
def start_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RuntimeProcess]]:
    started: list[RuntimeProcess] = []

    def start(model_store: Path, *extra_args: str) -> RuntimeProcess:
        runtime = RuntimeProcess(
            model_store, tmp_path_factory.mktemp("runtime-log") / "runtime.log", *extra_args
        )
        started.append(runtime)
        runtime.wait_ready(timeout=120)
        return runtime

    yield start
    for runtime in started:
        runtime.stop(timeout=20)


@pytest.fixture(scope="session")
def mnist_runtime(model_store: Path, start_runtime: Callable[..., RuntimeProcess]) -> RuntimeProcess:
    """The example's store served as the seed's InferenceService ``torchserve`` would serve it."""
    return start_runtime(model_store, "--model-name", "torchserve")


@pytest.fixture(scope="session")
def torchserve_layout_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed layout of an archive in TorchServe's example layout: the example's mnist.py and weights, and a
    handler on TorchServe's own ``ImageClassifier`` (``ts``), packed by the real torch-model-archiver."""
    import build_model_store

    return build_model_store.build_model_store(tmp_path_factory.mktemp("ts-layout"), handler=TS_HANDLER)


@pytest.fixture(scope="session")
def torchserve_layout_runtime(
    torchserve_layout_store: Path, start_runtime: Callable[..., RuntimeProcess]
) -> RuntimeProcess:
    """Our runtime serving :func:`torchserve_layout_store` unmodified."""
    return start_runtime(torchserve_layout_store)
