"""Build the seed's model-store layout for the MNIST example with the real ``torch-model-archiver``.

    .venv/bin/python examples/mnist/build_model_store.py [OUT_DIR] [--version 2.0]

writes::

    OUT_DIR/config/config.properties
    OUT_DIR/model-store/mnist.mar

the layout KServe's TorchServe sample uses (and the storage initializer copies to ``/mnt/models``).
OUT_DIR defaults to ``examples/mnist/model-store`` (git-ignored). ``--version 2.0`` makes the canary's
store: same weights, model version 2.0 in the archive's manifest and in ``model_snapshot``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL_FILE = HERE / "mnist.py"
HANDLER = HERE / "mnist_handler.py"
WEIGHTS = HERE / "mnist_cnn.pt"
DEFAULT_OUT = HERE / "model-store"
# Where the storage initializer puts the store inside the pod.
IN_CLUSTER_MODEL_STORE = "/mnt/models/model-store"


def archiver_command() -> str:
    """``torch-model-archiver`` beside the running interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "torch-model-archiver"
    if beside.is_file():
        return str(beside)
    found = shutil.which("torch-model-archiver")
    if found is None:
        raise FileNotFoundError("torch-model-archiver is not installed (pip install torch-model-archiver)")
    return found


def build_archive(
    export_dir: Path,
    *,
    model_name: str = "mnist",
    version: str = "1.0",
    handler: Path = HANDLER,
    model_file: Path = MODEL_FILE,
    serialized_file: Path = WEIGHTS,
    extra_files: Sequence[Path] = (),
    archive_format: str = "default",
) -> Path:
    """Run ``torch-model-archiver``; return the archive (``NAME.mar``, or a directory for no-archive)."""
    export_dir.mkdir(parents=True, exist_ok=True)
    command = [
        archiver_command(),
        "--model-name",
        model_name,
        "--version",
        version,
        "--model-file",
        str(model_file),
        "--serialized-file",
        str(serialized_file),
        "--handler",
        str(handler),
        "--export-path",
        str(export_dir),
        "--archive-format",
        archive_format,
        "--force",
    ]
    if extra_files:
        command += ["--extra-files", ",".join(str(path) for path in extra_files)]
    # The archiver stages the files in $TMPDIR/<model-name> and deletes that folder: two archivers of one
    # model name at once (parallel test runs, two checkouts) would pack each other's half-copied files.
    with tempfile.TemporaryDirectory(prefix="archiver-") as staging:
        done = subprocess.run(
            command, env={**os.environ, "TMPDIR": staging}, check=False, capture_output=True, text=True
        )
    if done.returncode != 0:
        raise RuntimeError(f"torch-model-archiver failed ({done.returncode}):\n{done.stderr}{done.stdout}")
    suffix = {"default": ".mar", "zip-store": ".mar", "tgz": ".tar.gz", "no-archive": ""}[archive_format]
    archive = export_dir / f"{model_name}{suffix}"
    if not archive.exists():
        raise FileNotFoundError(f"torch-model-archiver reported success but wrote no {archive}")
    return archive


def config_properties(
    *,
    model_name: str = "mnist",
    version: str = "1.0",
    mar_name: str | None = None,
    model_store: str = IN_CLUSTER_MODEL_STORE,
    inference_port: int = 8080,
    management_port: int = 8081,
    metrics_port: int = 8082,
    batch_size: int = 1,
    max_batch_delay_ms: int = 10,
) -> str:
    """``config.properties`` in the form of KServe's TorchServe sample, for one model."""
    snapshot = {
        "name": "startup.cfg",
        "modelCount": 1,
        "models": {
            model_name: {
                version: {
                    "defaultVersion": True,
                    "marName": mar_name or f"{model_name}.mar",
                    "minWorkers": 1,
                    "maxWorkers": 5,
                    "batchSize": batch_size,
                    "maxBatchDelay": max_batch_delay_ms,
                    "responseTimeout": 120,
                }
            }
        },
    }
    lines = [
        f"inference_address=http://0.0.0.0:{inference_port}",
        f"management_address=http://0.0.0.0:{management_port}",
        f"metrics_address=http://0.0.0.0:{metrics_port}",
        "enable_metrics_api=true",
        "metrics_format=prometheus",
        "number_of_netty_threads=4",
        "job_queue_size=10",
        "enable_envvars_config=true",
        "install_py_dep_per_model=true",
        f"model_store={model_store}",
        "model_snapshot=" + json.dumps(snapshot, separators=(",", ":")),
    ]
    return "\n".join(lines) + "\n"


def build_model_store(
    out_dir: Path,
    *,
    version: str = "1.0",
    model_name: str = "mnist",
    handler: Path = HANDLER,
    serialized_file: Path = WEIGHTS,
    model_store: str = IN_CLUSTER_MODEL_STORE,
) -> Path:
    """Write ``OUT/model-store/NAME.mar`` and ``OUT/config/config.properties``; return ``out_dir``."""
    out_dir = Path(out_dir)
    archive = build_archive(
        out_dir / "model-store",
        model_name=model_name,
        version=version,
        handler=handler,
        serialized_file=serialized_file,
    )
    config_dir = out_dir / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "config.properties").write_text(
        config_properties(
            model_name=model_name, version=version, mar_name=archive.name, model_store=model_store
        )
    )
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out_dir", nargs="?", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--version", default="1.0", help="model version (e.g. 2.0 for the canary)")
    parser.add_argument("--model-name", default="mnist")
    parser.add_argument(
        "--model-store-path",
        default=IN_CLUSTER_MODEL_STORE,
        help="model_store written into config.properties (where the pod sees the .mar files)",
    )
    args = parser.parse_args(argv)
    out = build_model_store(
        args.out_dir, version=args.version, model_name=args.model_name, model_store=args.model_store_path
    )
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
