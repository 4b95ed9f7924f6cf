"""Real processes for the monitoring tests: runtimes on loopback ports, a Prometheus of our own (Debian's
``prometheus`` binary, temp config and storage, loopback only), and the template variables of the
dashboard substituted the way Grafana would."""

from __future__ import annotations

import math
import re
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
from support.runtime import RuntimeProcess, build_archive
from support.runtime import build_mnist_store as build_mnist_store

from e2e.processes import LoggedProcess
from e2e.processes import free_port as free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DIR = REPO_ROOT.parent / "shared"
MNIST_REQUEST = SHARED_DIR / "data" / "requests" / "v1" / "mnist.json"
RULES = REPO_ROOT / "monitoring" / "prometheus" / "isvc-rules.yaml"
DASHBOARD = REPO_ROOT / "monitoring" / "grafana" / "torch-isvc.json"
ASSETS = Path(__file__).resolve().parent / "assets"


def require(tool: str) -> str:
    """The path of a binary the Makefile's ``prometheus`` target installs; a clear failure without it."""
    found = shutil.which(tool)
    if found is None:
        raise AssertionError(f"{tool} is not installed: run `make prometheus` (apt-get install prometheus)")
    return found


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Runtime(RuntimeProcess):
    """``python -m isvc_runtime`` as one revision of an InferenceService (Knative's env, as in a pod)."""

    def __init__(self, store: Path, log_path: Path, *, isvc: str, revision: str) -> None:
        self.metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.revision = revision
        env = {"ISVC_NAME": isvc, "K_REVISION": revision, "K_SERVICE": f"{isvc}-predictor-default"}
        super().__init__(
            store, log_path, "--metrics-port", str(self.metrics_port), "--model-name", isvc, env=env
        )

    def wait_settled(self, timeout: float = 120) -> None:
        """Until no model is still loading (every model loaded or failed)."""
        self.wait_loaded(timeout)


class Prometheus(LoggedProcess):
    """Prometheus on a loopback port, scraping ``targets`` every second and evaluating ``rule_files``."""

    def __init__(self, work_dir: Path, targets: list[str], rule_files: list[Path]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        work_dir.mkdir(parents=True, exist_ok=True)
        config = work_dir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            f"rule_files: {[str(p) for p in rule_files]}\n"
            "scrape_configs:\n  - job_name: torch-isvc\n    static_configs:\n"
            f"      - targets: {targets}\n"
        )
        command = [
            require("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={work_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        super().__init__(command, work_dir / "prometheus.log")
        wait_until(
            lambda: self.alive() and httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200,
            60,
            "Prometheus to be ready",
        )

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        response = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=10)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {response.status_code} {body}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def alerts(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    values = [float(item["value"][1]) for item in result]
    return [v for v in values if math.isfinite(v)]


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Grafana's ``$name`` / ``${name}`` substitution over an expression."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise AssertionError(f"no value for ${name} in {expr!r}")
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, expr)


def build_bad_canary_store(out_dir: Path) -> Path:
    """A canary revision gone wrong: ``mnist`` 2.0 answers every request slowly with a 500, and a
    second archive, ``scorer``, is corrupt and never loads."""
    build_archive(out_dir / "model-store", "mnist", handler=ASSETS / "bad_canary_handler.py", version="2.0")
    (out_dir / "model-store" / "scorer.mar").write_bytes(b"not a zip archive")
    (out_dir / "config").mkdir(parents=True, exist_ok=True)
    (out_dir / "config" / "config.properties").write_text(
        "inference_address=http://0.0.0.0:8080\nload_models=all\n"
    )
    return out_dir
