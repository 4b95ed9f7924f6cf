"""The ``runtime`` extra alone, installed in a fresh virtual environment from the files the runtime
image's stages lay out: every module of the runtime imports, and an archive's model-config.yaml is
read (pyyaml must be declared there, not only in another extra).

torch, torchvision and captum, and the packages they require, are what the image installs first from
its own index (a multi-gigabyte download): they are linked from this interpreter's environment, read-only,
instead. Everything else the extra declares is installed by pip from the requirements file the image's
requirements stage writes, as in the image; the runtime is imported from the image's python path. pip's
cache is reused as tests/images/test_image_install.py does (PIP_NO_CACHE_DIR is left out). Needs PyPI or a
warm cache.
"""

from __future__ import annotations

import os
import re
import subprocess
from importlib.metadata import Distribution, PackageNotFoundError, distribution
from pathlib import Path

import pytest
from dockerfile_stages import build_context, env_of, lay_out_with_requirements, parse_stages
from fresh_venv import fresh_venv, site_packages
from packaging.requirements import Requirement

pytestmark = pytest.mark.slow

LINKED = ("torch", "torchvision", "captum")  # the image's first RUN, from its own index

PROBE = """
import importlib, json, pkgutil, sys
from pathlib import Path
import isvc_runtime
from isvc_runtime.loader import prepare

skipped = ("isvc_runtime.storage.", "isvc_runtime.__main__")  # the storage extra's; a command line
for module in pkgutil.walk_packages(isvc_runtime.__path__, "isvc_runtime."):
    if not module.name.startswith(skipped):
        importlib.import_module(module.name)
model = Path(sys.argv[1])
(model / "MAR-INF").mkdir(parents=True)
(model / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(
    {"model": {"modelName": "m", "handler": "base_handler", "configFile": "model-config.yaml"}}
))
(model / "model-config.yaml").write_text("batchSize: 4\\nmaxBatchDelay: 20\\n")
_, _, model_yaml = prepare(model, model.parent / "work")
print(json.dumps(model_yaml))
"""


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_closure(names: tuple[str, ...]) -> dict[str, Distribution]:
    """The installed distributions ``names`` need, themselves included, following the extras their
    requirements name (torch's ``cuda-toolkit[cublas,...]``); markers are evaluated here."""
    found: dict[str, Distribution] = {}
    followed: set[tuple[str, str]] = set()
    pending = [(name, "") for name in names]
    while pending:
        name, extra = pending.pop()
        name = _key(name)
        if (name, extra) in followed:
            continue
        followed.add((name, extra))
        try:
            dist = found.get(name) or distribution(name)
        except PackageNotFoundError:
            continue
        found[name] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
                pending += [(requirement.name, e) for e in ("", *requirement.extras)]
    return found


def link_distributions(dists: dict[str, Distribution], overlay: Path) -> None:
    """Symlink each distribution's top-level files and its metadata into ``overlay``."""
    overlay.mkdir()
    for dist in dists.values():
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            source = Path(str(dist.locate_file(top))).resolve()
            if top in ("..", "bin") or not source.exists() or (overlay / top).exists():
                continue
            (overlay / top).symlink_to(source)


def test_the_runtime_extra_alone_imports_every_runtime_module_and_reads_model_config_yaml(
    tmp_path: Path,
) -> None:
    root = tmp_path / "image"
    stages = parse_stages()
    linked = requirement_closure(LINKED)
    assert set(LINKED) <= set(linked), f"{LINKED} must be installed here to be linked"
    assert "pyyaml" not in linked, "pyyaml would come in through torch's requirements"
    link_distributions(linked, tmp_path / "linked")
    prefix = tmp_path / "venv"
    python = fresh_venv(prefix)
    lay_out_with_requirements(stages, "runtime", root, build_context(), str(python))
    (site_packages(python) / "linked-torch.pth").write_text(f"{tmp_path / 'linked'}\n")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PIP_NO_CACHE", "VIRTUAL_ENV", "PYTHONPATH"))
    }
    env |= {"VIRTUAL_ENV": str(prefix), "PATH": f"{prefix / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(root / env_of(stages, "runtime")["PYTHONPATH"].lstrip("/"))}
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-r", "requirements-runtime.txt"],
        cwd=root / "src",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (
        f"pip install -r requirements-runtime.txt failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    done = subprocess.run(
        [str(python), "-c", PROBE, str(tmp_path / "model")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == '{"batchSize": 4, "maxBatchDelay": 20}'
