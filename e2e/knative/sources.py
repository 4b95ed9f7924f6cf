"""Where Knative's and Istio's own files are: the Go module cache, filled by ``e2e/cluster/build.sh``.

``e2e/cluster/knative/go.mod`` pins ``knative.dev/serving`` (its ``cmd/webhook`` is built into the cache next
to the control plane, its ``config/core/`` is read here) and ``e2e/cluster/istio/go.mod`` pins
``istio.io/api`` (``kubernetes/customresourcedefinitions.gen.yaml``). Nothing is downloaded at test time:
the module cache is asked offline, and a missing module or binary names ``make cluster`` as the fix.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_DIR = REPO_ROOT / "e2e" / "cluster"
BUILD_SCRIPT = CLUSTER_DIR / "build.sh"
KNATIVE_GO_MODULE = CLUSTER_DIR / "knative"
ISTIO_GO_MODULE = CLUSTER_DIR / "istio"
SERVING_MODULE = "knative.dev/serving"
ISTIO_API_MODULE = "istio.io/api"


class SourcesMissing(RuntimeError):
    """A pinned module or the webhook binary is not in the cache (the message says how to get it)."""


def module_dir(go_module: Path, module: str) -> tuple[Path, str]:
    """(directory in the module cache, version) of ``module`` as pinned by the go.mod in ``go_module``."""
    env = {**os.environ, "GOPROXY": "off", "GOFLAGS": "-mod=readonly"}
    try:
        done = subprocess.run(["go", "mod", "download", "-json", module], cwd=go_module, env=env,
                              capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError as missing:
        raise SourcesMissing(f"'go' not found on PATH: cannot locate {module}; run `make cluster`") \
            from missing
    info = json.loads(done.stdout or "{}") if done.stdout.strip().startswith("{") else {}
    if done.returncode != 0 or not info.get("Dir"):
        reason = info.get("Error") or done.stderr.strip()
        raise SourcesMissing(f"{module} (pinned in {go_module / 'go.mod'}) is not in the Go module cache: "
                             f"{reason}; run `make cluster` (bash e2e/cluster/build.sh)")
    return Path(info["Dir"]), str(info["Version"])


def serving_dir() -> tuple[Path, str]:
    """knative.dev/serving's source tree (``config/core/``) and its version."""
    return module_dir(KNATIVE_GO_MODULE, SERVING_MODULE)


def istio_api_dir() -> tuple[Path, str]:
    """istio.io/api's source tree (``kubernetes/customresourcedefinitions.gen.yaml``) and its version."""
    return module_dir(ISTIO_GO_MODULE, ISTIO_API_MODULE)


def webhook_binary() -> Path:
    """Knative's ``cmd/webhook`` as build.sh caches it (never built here: that is ``make cluster``'s job)."""
    out = subprocess.run(["bash", str(BUILD_SCRIPT), "--print-knative-dir"], capture_output=True, text=True,
                         check=True)
    binary = Path(out.stdout.strip()) / "webhook"
    if not os.access(binary, os.X_OK):
        raise SourcesMissing(f"Knative's webhook is not built at {binary}; run `make cluster` "
                             "(bash e2e/cluster/build.sh)")
    return binary
