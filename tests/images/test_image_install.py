"""The storage-initializer and operator targets' exact install commands, run in fresh virtual
environments over the files their Dockerfile stages lay out: they must not pull torch, and what they
install must run from the image's python path (the storage CLI answers --help; the operator renders a
Knative Service).

Runs the Dockerfile's RUN text verbatim with the stage's ENV, except PIP_NO_CACHE_DIR, so that pip's
cache is reused, and except `python -m compileall` (both speed-only differences). Needs PyPI or a warm
pip cache.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from dockerfile_stages import (
    build_context,
    effective,
    env_of,
    exec_form,
    lay_out_with_requirements,
    parse_stages,
)
from fresh_venv import fresh_venv
from isvc_operator.config import default_config
from isvc_operator.render import render_knative_service

pytestmark = pytest.mark.slow

STAGES = parse_stages()
FORBIDDEN = ("torch", "torchvision", "triton")  # and any nvidia-* CUDA library


def install_target(target: str, tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    """Lay out the target's files, create a fresh venv as its python, run its RUN commands."""
    root = tmp_path / "image"
    prefix = tmp_path / "venv"
    python = fresh_venv(prefix)
    runs = lay_out_with_requirements(STAGES, target, root, build_context(), str(python))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_NO_CACHE", "VIRTUAL_ENV", "PYTHONPATH", "ISVC_TEMPLATES_DIR"))
    }
    for key, value in env_of(STAGES, target).items():
        if key == "PIP_NO_CACHE_DIR":
            continue
        # An absolute path the image has points into the layout.
        env[key] = (
            str(root / value.lstrip("/"))
            if value.startswith("/") and (root / value.lstrip("/")).exists()
            else value
        )
    env |= {"VIRTUAL_ENV": str(prefix), "PATH": f"{prefix / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    for workdir, command in runs:
        if command.startswith(("groupadd", "useradd", "python -m compileall")):
            continue  # the image's user needs root and a real image; compiling is for start-up time only
        assert command.startswith("pip install "), f"unexpected RUN in {target}: {command}"
        done = subprocess.run(
            ["bash", "-c", command], cwd=workdir, env=env, capture_output=True, text=True, timeout=240
        )
        assert done.returncode == 0, f"RUN {command} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return python, env, root


def installed_distributions(python: Path, env: dict[str, str]) -> set[str]:
    done = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return {d["name"].lower() for d in json.loads(done.stdout)}


def assert_no_torch(python: Path, env: dict[str, str], package: str, root: Path) -> set[str]:
    """No torch installed; ``package`` is imported from the image's python path laid out under ``root``."""
    installed = installed_distributions(python, env)
    where = subprocess.run([str(python), "-c", f"import {package}; print({package}.__file__)"], env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(root / "opt"), where
    pulled = sorted(d for d in installed if d in FORBIDDEN or d.startswith("nvidia-"))
    assert not pulled, f"installed torch or CUDA libraries: {pulled}"
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"
    assert subprocess.run([str(python), "-c", probe], env=env).returncode == 0, "torch is importable"
    return installed


def test_storage_initializer_install_has_no_torch_and_its_entrypoint_runs(tmp_path: Path) -> None:
    python, env, root = install_target("storage-initializer", tmp_path)
    installed = assert_no_torch(python, env, "isvc_runtime.storage", root)
    assert {"botocore", "google-cloud-storage", "requests", "urllib3"} <= installed
    entrypoint = exec_form(effective(STAGES, "storage-initializer", "ENTRYPOINT"))

    def initializer(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(python), *entrypoint[1:], *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)

    done = initializer("--help")
    assert done.returncode == 0, done.stderr
    assert "src_uri" in done.stdout and "dest_dir" in done.stdout
    # The import chain of the storage CLI must not need torch either: copying a local file works.
    source = tmp_path / "model-src"
    source.mkdir()
    (source / "model.mar").write_bytes(b"archive bytes")
    done = initializer(str(source), str(tmp_path / "mnt-models"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "mnt-models" / "model.mar").read_bytes() == b"archive bytes"


RENDER_ISVC = {
    "apiVersion": "serving.kubeflow.org/v1beta1",
    "kind": "InferenceService",
    "metadata": {"name": "torchserve", "namespace": "default", "uid": "0000-1111"},
    "spec": {"predictor": {"pytorch": {"storageUri": "gs://kfserving-examples/models/torchserve/image_classifier"}}},
}
RENDER_PROBE = f"""
import json
from isvc_operator.config import default_config
from isvc_operator.render import render_knative_service
print(json.dumps(render_knative_service({RENDER_ISVC!r}, default_config())))
"""


def test_operator_install_has_no_torch_and_renders_a_knative_service(tmp_path: Path) -> None:
    python, env, root = install_target("operator", tmp_path)
    installed = assert_no_torch(python, env, "isvc_operator", root)
    assert {"kopf", "kubernetes", "jinja2", "pyyaml"} <= installed
    # As in the image: the templates are the files of the package isvc_operator.templates on the image's
    # python path, and they render exactly what the repository's templates/ render here.
    done = subprocess.run(
        [str(python), "-c", RENDER_PROBE], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr
    ksvc = json.loads(done.stdout)
    assert ksvc == json.loads(json.dumps(render_knative_service(RENDER_ISVC, default_config())))
    [container] = ksvc["spec"]["template"]["spec"]["containers"]
    [init] = ksvc["spec"]["template"]["spec"]["initContainers"]
    assert container["args"][:2] == ["--model-store", "/mnt/models"]
    assert init["args"] == ["gs://kfserving-examples/models/torchserve/image_classifier", "/mnt/models"]
    done = subprocess.run(
        [str(python), "-c", "import isvc_operator.__main__, isvc_operator.handlers"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
