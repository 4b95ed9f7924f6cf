"""Which edits rebuild which image: each image is keyed on what it holds (e2e/images/source_key.py), so an
edit of README.md rebuilds nothing, an edit of the operator rebuilds only the operator image, and the 6 GB
runtime image is rebuilt only for runtime/isvc_runtime/, pyproject.toml or its own Dockerfile stages.

The keys are computed over a copy of the repository's image sources in a scratch git checkout, edited
there."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from e2e import REPO_ROOT
from e2e.images.source_key import context_sources, source_key

TARGETS = ("runtime", "runtime-gpu", "storage-initializer", "operator")
COPIED = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "operator", "runtime", "templates")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    tracked = subprocess.run(["git", "ls-files", "--", *COPIED], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    for name in tracked:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, tmp_path / name)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    return tmp_path


def rebuilt_by(checkout: Path, edit: Callable[[Path], None]) -> set[str]:
    before = {target: source_key(checkout, target) for target in TARGETS}
    edit(checkout)
    return {target for target in TARGETS if source_key(checkout, target) != before[target]}


def append(relative: str, text: str = "\n# edited\n") -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        with (root / relative).open("a") as file:
            file.write(text)
    return edit


def test_each_image_copies_only_its_own_package() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert context_sources(dockerfile, "runtime") == ["pyproject.toml", "runtime/isvc_runtime"]
    assert context_sources(dockerfile, "storage-initializer") == [
        "pyproject.toml", "runtime/isvc_runtime/__init__.py", "runtime/isvc_runtime/storage"]
    assert context_sources(dockerfile, "operator") == [
        "operator/isvc_operator", "pyproject.toml", "templates"]


def test_editing_the_readme_rebuilds_no_image(checkout: Path) -> None:
    assert rebuilt_by(checkout, append("README.md")) == set()


def test_editing_the_operator_or_its_templates_rebuilds_only_the_operator_image(checkout: Path) -> None:
    assert rebuilt_by(checkout, append("operator/isvc_operator/render.py")) == {"operator"}
    assert rebuilt_by(checkout, append("templates/knative-service.yaml.j2", "\n")) == {"operator"}


def test_editing_the_runtime_rebuilds_the_runtimes_and_not_the_storage_initializer(checkout: Path) -> None:
    assert rebuilt_by(checkout, append("runtime/isvc_runtime/loader.py")) == {"runtime", "runtime-gpu"}


def test_editing_the_storage_package_rebuilds_the_storage_initializer_and_runtimes(checkout: Path) -> None:
    assert rebuilt_by(checkout, append("runtime/isvc_runtime/storage/errors.py")) == {
        "storage-initializer", "runtime", "runtime-gpu"}


def test_a_new_untracked_source_file_rebuilds_the_image_that_holds_it(checkout: Path) -> None:
    assert rebuilt_by(checkout, append("operator/isvc_operator/new_module.py", "X = 1\n")) == {"operator"}


def test_caches_beside_the_sources_rebuild_nothing(checkout: Path) -> None:
    def compile_runtime(root: Path) -> None:
        cache = root / "runtime" / "isvc_runtime" / "__pycache__"
        cache.mkdir()
        (cache / "loader.cpython-311.pyc").write_bytes(b"compiled")
    assert rebuilt_by(checkout, compile_runtime) == set()


def test_pyproject_rebuilds_every_image(checkout: Path) -> None:
    assert rebuilt_by(checkout, append("pyproject.toml")) == set(TARGETS)


def test_a_dockerfile_stage_rebuilds_its_own_image_and_the_shared_stages_rebuild_all(checkout: Path) -> None:
    def edit_stage(first_line: str) -> Callable[[Path], None]:
        def edit(root: Path) -> None:
            dockerfile = root / "Dockerfile"
            text = dockerfile.read_text()
            assert text.count(first_line) == 1
            dockerfile.write_text(text.replace(first_line, f"{first_line}\nLABEL edited=yes"))
        return edit

    assert rebuilt_by(checkout, edit_stage("FROM base AS operator")) == {"operator"}
    assert rebuilt_by(checkout, edit_stage("FROM base AS storage-initializer")) == {"storage-initializer"}
    assert rebuilt_by(checkout, edit_stage("FROM base AS requirements")) == set(TARGETS)
    assert rebuilt_by(checkout, append("Dockerfile", "\n# a comment\n")) == set()


def test_the_salt_base_image_and_build_args_rebuild_every_image(checkout: Path) -> None:
    assert all(source_key(checkout, t, "base sha256:1") != source_key(checkout, t, "base sha256:2")
               for t in TARGETS)
