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


def _site_packages(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def _probe(python: Path, code: str) -> dict[str, str]:
    """The JSON object ``code`` prints when run by ``python``; empty when that fails or is missing."""
    if not python.is_file():
        return {}
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        return {}
    import json

    return json.loads(out.stdout)


def _versions(python: Path, module: str, distributions: dict[str, str], also: str) -> dict[str, str]:
    """What ``python`` imports: ``{module}_file`` (where ``module`` comes from), each distribution's
    version under its key, and ``torch``'s version; ``also``: more modules that must import."""
    versions = ", ".join(f"{key!r}: m.version({name!r})" for key, name in distributions.items())
    probe = (
        f"import importlib.metadata as m, json, torch, {module}, {also};"
        f"print(json.dumps({{'{module}_file': {module}.__file__, 'torch': torch.__version__,"
        f" 'torch_file': torch.__file__, {versions}}}))"
    )
    return _probe(python, probe)


def _ts_versions() -> dict[str, str]:
    """Where ``ts`` is imported from in the bench venv, and the installed versions."""
    distributions = {"torchserve": "torchserve", "archiver": "torch-model-archiver"}
    return _versions(ts_python(), "ts", distributions, "captum")


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
    (_site_packages(ts_python()) / PTH_NAME).write_text(f"{project_site}\n")
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


# ------------------------------------------------------------------------------------------ KServe
# KServe 0.21's Python model server, the second anchor, in bench/.venv-kserve (git-ignored). kserve pins
# protobuf<7, grpcio and pandas that fight the project venv, so pip resolves kserve's own closure into an
# empty venv first; only then does a ``.pth`` line append the project venv's site-packages, so torch and
# torchvision (several GB) are imported from there instead of downloaded again, while everything kserve
# installed (its protobuf, numpy, fastapi, uvicorn...) comes first on sys.path. The order matters: a
# ``.pth`` written before the install would show pip the project's packages as installed ones to replace.
KSERVE_VENV = BENCH_DIR / ".venv-kserve"
KSERVE_VERSION = "0.21.0"


def kserve_python() -> Path:
    return KSERVE_VENV / "bin" / "python"


def _kserve_versions() -> dict[str, str]:
    return _versions(kserve_python(), "kserve", {"kserve": "kserve"}, "torchvision")


def kserve_ready() -> bool:
    info = _kserve_versions()
    return (
        bool(info)
        and info["kserve"] == KSERVE_VERSION
        and Path(info["kserve_file"]).resolve().is_relative_to(KSERVE_VENV.resolve())
    )


def ensure_kserve(log: object = print) -> dict[str, str]:
    """Create (or rebuild) ``bench/.venv-kserve``; return what it imports (versions, paths)."""
    if kserve_ready():
        return _kserve_versions()
    log(f"installing KServe {KSERVE_VERSION} into {KSERVE_VENV.relative_to(REPO_ROOT)} (minutes) ...")  # type: ignore[operator]
    shutil.rmtree(KSERVE_VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(KSERVE_VENV)], check=True)
    subprocess.run(
        [
            str(kserve_python()),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            f"kserve=={KSERVE_VERSION}",
        ],
        check=True,
    )
    project_site = Path(sysconfig.get_paths()["purelib"])
    (_site_packages(kserve_python()) / PTH_NAME).write_text(f"{project_site}\n")
    if not kserve_ready():
        raise RuntimeError(f"{KSERVE_VENV} does not import KServe {KSERVE_VERSION} with torch")
    return _kserve_versions()


# ---------------------------------------------------------------------------------------- grpcload
# The gRPC load generator (bench/grpcload/main.go), built with the machine's Go from its pinned modules
# (the Go module proxy, or Go's module cache) into the cache outside the repository, once per source.
GRPCLOAD_SRC = BENCH_DIR / "grpcload"
CACHE = Path(os.environ.get("TORCH_ISVC_CACHE") or Path.home() / ".cache" / "torch-isvc")


def grpcload_path() -> Path:
    """Where the build of the current sources lives: named by a hash of main.go, go.mod and go.sum."""
    import hashlib

    digest = hashlib.sha256()
    for name in ("main.go", "go.mod", "go.sum"):
        digest.update((GRPCLOAD_SRC / name).read_bytes())
    return CACHE / "grpcload" / f"grpcload-{digest.hexdigest()[:12]}"


def ensure_grpcload(log: object = print) -> str:
    """Path of the built gRPC load generator; builds it when missing (needs ``go``, >= 1.25)."""
    path = grpcload_path()
    if path.is_file():
        return str(path)
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("the gRPC load generator needs Go >= 1.25 (go is not on PATH)")
    log(f"building {GRPCLOAD_SRC.relative_to(REPO_ROOT)} into {path} ...")  # type: ignore[operator]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    subprocess.run(
        [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(partial), "."],
        cwd=GRPCLOAD_SRC,
        env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly -buildvcs=false"},
        check=True,
    )
    partial.replace(path)
    return str(path)
