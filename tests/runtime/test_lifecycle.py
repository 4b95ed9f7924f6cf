"""Startup, readiness while loading, long batches, SIGTERM, and configuration errors."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from runtime_support import RuntimeProcess, asset_archive


@pytest.fixture(scope="module")
def slow_store(tmp_path_factory: pytest.TempPathFactory, weights: dict[str, Path]) -> Path:
    store = tmp_path_factory.mktemp("slow-store")
    asset_archive(store, "slow", "slow_init_handler.py", "scale_sum.py", weights["scale_sum"])
    return store


def test_readiness_is_false_until_the_model_loads_then_long_batches_do_not_block_health_and_sigterm_drains(
    slow_store: Path, tmp_path: Path
) -> None:
    with RuntimeProcess(slow_store, tmp_path / "runtime.log", "--model-name", "isvc") as server:
        server.wait_live()
        # initialize() sleeps for 4 s: the server answers, honestly not ready.
        ready = server.client.get("/v2/health/ready")
        assert ready.status_code == 503 and "still loading" in ready.json()["error"]
        assert server.client.get("/v2/models/isvc/ready").status_code == 503
        early = server.client.post("/v1/models/slow:predict", json={"instances": [[1]]})
        assert early.status_code == 503 and "loading" in early.json()["error"]
        server.wait_ready()
        assert server.client.post("/v1/models/isvc:predict", json={"instances": [[1, 2]]}).status_code == 200

        # A two-second batch runs on the model's thread; health checks answer meanwhile.
        results: dict[str, httpx.Response] = {}

        def slow_request() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                results["slow"] = client.post("/v1/models/slow:predict", json={"instances": [[999]]})

        thread = threading.Thread(target=slow_request)
        thread.start()
        time.sleep(0.5)
        started = time.monotonic()
        assert server.client.get("/v2/health/live").status_code == 200
        assert time.monotonic() - started < 1.0

        # SIGTERM while that batch still runs: the request completes, the process exits 0.
        assert server.stop() == 0
        thread.join(10)
        assert results["slow"].status_code == 200
        assert results["slow"].json() == {"predictions": [[1998.0]]}


@pytest.mark.parametrize(
    ("config_timeout", "flags"),
    [(1, ()), (30, ("--response-timeout", "1"))],  # the flag (the isvc's batcher.timeout) wins over config
    ids=["responseTimeout", "--response-timeout"],
)
def test_a_request_over_response_timeout_gets_504_and_the_server_keeps_serving(
    slow_store: Path, tmp_path: Path, config_timeout: int, flags: tuple[str, ...]
) -> None:
    config = tmp_path / "config.properties"
    config.write_text(f'models={{"slow": {{"1.0": {{"responseTimeout": {config_timeout}}}}}}}\n')
    args = ("--config-file", str(config), *flags)
    with RuntimeProcess(
        slow_store, tmp_path / "runtime.log", *args, env={"SLOW_INIT_SECONDS": "0"}
    ) as server:
        server.wait_ready()
        late = server.client.post("/v1/models/slow:predict", json={"instances": [[999]]})
        assert late.status_code == 504 and "within 1 s" in late.json()["error"]
        time.sleep(1.5)  # the abandoned batch still holds the model's only worker for its last second
        assert server.client.post("/v1/models/slow:predict", json={"instances": [[1, 1]]}).json() == {
            "predictions": [[4.0]]
        }


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("max_request_size=lots", "max_request_size"),
        ("default_response_timeout=-3", "default_response_timeout"),
        ("inference_address=http://0.0.0.0:notaport", "inference_address"),
        ('models={"slow": {"1.0": {"batchSize": "eight"}}}', "models"),
        ('models={"slow": ', "models"),
        ('model_snapshot={"models": []}', "model_snapshot"),
        ("enable_envvars_config=maybe", "enable_envvars_config"),
        ("load_models=missing.mar", "missing.mar"),
    ],
)
def test_malformed_config_stops_startup_naming_the_key(
    slow_store: Path, tmp_path: Path, line: str, key: str
) -> None:
    config = tmp_path / "config.properties"
    config.write_text(f"inference_address=http://127.0.0.1:8085\n{line}\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "isvc_runtime",
            "--model-store",
            str(slow_store),
            "--config-file",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert key in result.stderr


def test_missing_model_store_is_an_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "isvc_runtime", "--model-store", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "is not a directory" in result.stderr
