"""Running the client scripts of clients/ in their own virtual environment against a runtime on loopback.

The environment (clients/requirements.txt: KServe's SDK and tritonclient, whose pins fight ours) is built
once by clients/venv.sh into a cache outside the repository; :func:`clients_python` builds it when missing.
Each script runs a whole plan of calls in one process and prints its results as JSON (clients/plan.py).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

CLIENTS_DIR = Path(__file__).resolve().parent / "clients"
VENV_SCRIPT = CLIENTS_DIR / "venv.sh"
ISVC = "torchserve"  # the seed's InferenceService name, which the runtime also serves (--model-name)


def clients_python() -> Path:
    """The clients' interpreter, building their venv first when it is missing (minutes, once)."""
    result = subprocess.run(["bash", str(VENV_SCRIPT)], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"{VENV_SCRIPT} failed:\n{result.stderr}")
    return Path(result.stdout.strip().splitlines()[-1]) / "bin" / "python"


def run_client(python: Path, script: str, plan: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    """Run ``clients/SCRIPT`` on ``plan``; its results by call id."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(plan, file)
    try:
        result = subprocess.run(
            [str(python), str(CLIENTS_DIR / script), file.name],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=CLIENTS_DIR,
        )
    finally:
        Path(file.name).unlink()
    if result.returncode != 0:
        raise AssertionError(f"{script} exited with {result.returncode}:\n{result.stderr}")
    return json.loads(result.stdout)


def runtime_accepts(flag: str, *values: str) -> bool:
    """Whether ``python -m isvc_runtime`` takes ``flag`` (features that land later flip tests on)."""
    from isvc_runtime.server import parse_args

    try:
        parse_args(["--model-store", ".", flag, *values])
    except SystemExit:
        return False
    return True
