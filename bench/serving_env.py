"""The benchmark's tools: TorchServe 0.12.0 in its own environment, and wrk.

TorchServe and ``torch-model-archiver`` go into ``bench/.venv-torchserve`` (git-ignored), created once
and reused. Torch, torchvision and captum are not installed a second time: a ``.pth`` line puts the
project venv's site-packages *after* the bench venv's own, so ``ts`` comes from the bench venv while
torch comes from the project venv (same interpreter version, so the compiled wheels fit). The project
venv's own ``.pth`` files (its editable ``isvc_runtime``) are not processed there: TorchServe's worker
cannot import our runtime, as in a real TorchServe deployment.

``TORCH_ISVC_TS_BIN_DIR`` names a folder with ``python``, ``torchserve`` and ``torch-model-archiver``
to use instead (the bundle of bench/ts_bundle.sh, on a machine without internet): nothing is installed
then, and its ``ts`` must import as version 0.12.0.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
TS_VENV = BENCH_DIR / ".venv-torchserve"
TS_VERSION = "0.12.0"
TS_PACKAGES = (f"torchserve=={TS_VERSION}", f"torch-model-archiver=={TS_VERSION}")
PTH_NAME = "torch-isvc-project-venv.pth"
TS_BIN_DIR = os.environ.get("TORCH_ISVC_TS_BIN_DIR")  # a prepared TorchServe (see the module doc)


def ts_python() -> Path:
    return ts_bin("python")


def ts_bin(name: str) -> Path:
    return Path(TS_BIN_DIR) / name if TS_BIN_DIR else TS_VENV / "bin" / name


def _ts_site_packages() -> Path:
    out = subprocess.run(
        [str(ts_python()), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def _ts_versions() -> dict[str, str]:
    """Where ``ts`` is imported from in the bench venv, and the installed versions."""
    if not ts_python().is_file():
        return {}
    probe = (
        "import importlib.metadata as m, ts, torch, captum, json;"
        "print(json.dumps({'ts_file': ts.__file__, 'torchserve': m.version('torchserve'),"
        "'archiver': m.version('torch-model-archiver'), 'torch': torch.__version__}))"
    )
    out = subprocess.run([str(ts_python()), "-c", probe], capture_output=True, text=True)
    if out.returncode != 0:
        return {}
    import json

    return json.loads(out.stdout)


def torchserve_ready() -> bool:
    info = _ts_versions()
    return (
        bool(info)
        and info["torchserve"] == TS_VERSION
        and info["archiver"] == TS_VERSION
        and Path(info["ts_file"]).resolve().is_relative_to(TS_VENV.resolve())
        and ts_bin("torchserve").is_file()
        and ts_bin("torch-model-archiver").is_file()
    )


def ensure_torchserve(log: object = print) -> dict[str, str]:
    """Create or repair ``bench/.venv-torchserve``; return what it imports (versions, ``ts`` path).
    With ``TORCH_ISVC_TS_BIN_DIR`` set, only checks that TorchServe there."""
    if TS_BIN_DIR:
        info = _ts_versions()
        if info.get("torchserve") != TS_VERSION or info.get("archiver") != TS_VERSION:
            raise RuntimeError(f"TORCH_ISVC_TS_BIN_DIR={TS_BIN_DIR}: not TorchServe {TS_VERSION} ({info})")
        log(f"TorchServe {TS_VERSION} from {TS_BIN_DIR} (ts: {info['ts_file']})")  # type: ignore[operator]
        return info
    if torchserve_ready():
        return _ts_versions()
    if shutil.which("java") is None:
        raise RuntimeError("TorchServe needs Java 17 (java is not on PATH)")
    log(f"installing TorchServe {TS_VERSION} into {TS_VENV.relative_to(REPO_ROOT)} ...")  # type: ignore[operator]
    if not ts_python().is_file():
        subprocess.run([sys.executable, "-m", "venv", str(TS_VENV)], check=True)
    project_site = Path(sysconfig.get_paths()["purelib"])
    (_ts_site_packages() / PTH_NAME).write_text(f"{project_site}\n")
    subprocess.run(
        [
            str(ts_python()),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--ignore-installed",
            "--no-deps",
            *TS_PACKAGES,
        ],
        check=True,
    )
    if not torchserve_ready():
        raise RuntimeError(f"{TS_VENV} does not import TorchServe {TS_VERSION} from itself")
    return _ts_versions()


def ensure_wrk(log: object = print) -> str:
    """Path of ``wrk``; installs Debian's package when missing (needs root and an apt index)."""
    found = shutil.which("wrk")
    if found:
        return found
    log("installing wrk with apt-get ...")  # type: ignore[operator]
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, stdout=subprocess.DEVNULL, check=False).returncode != 0:
        # a fresh machine has no package index yet
        subprocess.run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL, check=True)
        subprocess.run(install, stdout=subprocess.DEVNULL, check=True)
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed and apt-get could not install it")
    return found
