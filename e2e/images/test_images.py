"""The images `make images-local` builds here with buildah: current with their sources, each holding exactly
its own code, squashed, running as UID 65532, with neither the host's CA bundle nor pip's cache inside, and
within the disk budget. What each image's pip installed is probed inside the image itself (a buildah working
container, run as UID 65532): the operator and the storage-initializer hold no torch, every runtime module
imports in the runtime image, the operator image renders what the repository renders."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from isvc_operator.config import default_config
from isvc_operator.render import render_knative_service

from e2e.images.source_key import tracked_files

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "e2e" / "images" / "build.sh"
TARGETS = ("storage-initializer", "operator", "runtime")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BUILDAH = ("buildah", "--storage-driver", "overlay")
BUDGET_BYTES = 15 * 10**9  # every image and the node's containerd copies together


def script(*args: str) -> str:
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


# buildah re-executes itself from a sealed memfd copy of its own binary (containers/storage
# pkg/unshare/unshare.c, copy_self_proc_exe); the kernel now and then refuses that seal with EBUSY while
# pages of the fresh copy are still referenced, and buildah exits before doing anything (seen once in CI,
# 0 of 150 runs in a loop). Only that failure is retried.
TRANSIENT_REEXEC_FAILURE = "sealing memfd copy: Device or resource busy"
TRIES = 3


def run_buildah(*args: str) -> subprocess.CompletedProcess[str]:
    """buildah with ``args`` on the images' storage driver; retried only when its re-exec failed."""
    for _ in range(TRIES):
        done = subprocess.run([*BUILDAH, *args], capture_output=True, text=True, timeout=300)
        if TRANSIENT_REEXEC_FAILURE not in done.stderr:
            break
    return done


def buildah(*args: str) -> str:
    done = run_buildah(*args)
    if done.returncode != 0:
        pytest.fail(f"buildah {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}",
                    pytrace=False)
    return done.stdout.strip()


def inspect(target: str) -> dict:
    image = script("--print-image", target)
    if not script("--print-id", target):
        pytest.fail(f"{image} is not built: run `make images-local`", pytrace=False)
    return json.loads(buildah("inspect", "--type", "image", image))


@pytest.mark.parametrize("target", TARGETS)
def test_image_is_built_from_the_current_sources_it_holds(target: str) -> None:
    labels = inspect(target)["OCIv1"]["config"]["Labels"]
    assert labels["io.torch-isvc.source-hash"] == script("--print-source-hash", target), \
        "stale: run `make images-local`"


@pytest.mark.parametrize("target", TARGETS)
def test_image_is_squashed_and_runs_as_the_fixed_non_root_user(target: str) -> None:
    image = inspect(target)
    assert image["OCIv1"]["config"]["User"] == "65532:65532"
    base_layers = len(json.loads(buildah("inspect", "--type", "image",
                                         "localhost/torch-isvc/python-base:3.11-bookworm"))["OCIv1"]["rootfs"]
                      ["diff_ids"])
    assert len(image["OCIv1"]["rootfs"]["diff_ids"]) <= base_layers + 1


@contextlib.contextmanager
def working_container(target: str) -> Iterator[str]:
    """A buildah working container of the target's image (its own writable layer), removed afterwards."""
    container = buildah("from", "--pull=never", script("--print-image", target))
    try:
        yield container
    finally:
        buildah("rm", container)


@contextlib.contextmanager
def image_root(target: str) -> Iterator[Path]:
    """The target's image filesystem, mounted read-only for reading (a buildah working container)."""
    with working_container(target) as container:
        try:
            yield Path(buildah("mount", container))
        finally:
            buildah("umount", container)


@pytest.fixture(scope="module")
def storage_initializer_root() -> Iterator[Path]:
    with image_root("storage-initializer") as root:
        yield root


# Where each image holds its code (the Dockerfile's COPYs): repository path -> path under its PYTHONPATH.
IMAGE_CODE = {
    "runtime": {"runtime/isvc_runtime": "isvc_runtime"},
    "storage-initializer": {"runtime/isvc_runtime/__init__.py": "isvc_runtime/__init__.py",
                            "runtime/isvc_runtime/storage": "isvc_runtime/storage"},
    "operator": {"operator/isvc_operator": "isvc_operator", "templates": "isvc_operator/templates"},
}
PYTHON_PATH = "opt/torch-isvc"


def expected_code(target: str) -> dict[str, Path]:
    """The files the target's image must hold, by their path under its PYTHONPATH."""
    expected: dict[str, Path] = {}
    for source, destination in IMAGE_CODE[target].items():
        for name in tracked_files(REPO_ROOT, [source]):
            expected[destination + name.removeprefix(source)] = REPO_ROOT / name
    return expected


@pytest.mark.parametrize("target", TARGETS)
def test_image_holds_exactly_its_own_code_as_in_the_repository(target: str) -> None:
    with image_root(target) as root:
        code = root / PYTHON_PATH
        held = {str(p.relative_to(code)): p for p in code.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
        expected = expected_code(target)
        assert sorted(held) == sorted(expected), "stale or foreign code: run `make images-local`"
        differing = [name for name, path in expected.items() if held[name].read_bytes() != path.read_bytes()]
        assert not differing, f"stale: {differing[:5]}"
        other = {"isvc_runtime", "isvc_operator"} - {d.split("/")[0] for d in IMAGE_CODE[target].values()}
        site = [p for p in root.glob("usr/local/lib/python3*/*-packages/*") if p.name in other]
        assert not site, f"{target} holds another image's package: {site}"


def test_neither_the_hosts_ca_bundle_nor_pips_cache_is_baked_in(storage_initializer_root: Path) -> None:
    bundle = storage_initializer_root / "etc/ssl/certs/ca-certificates.crt"
    assert bundle.read_bytes() != HOST_CA_BUNDLE.read_bytes()  # Debian's own bundle, not the proxy's CA
    cache = storage_initializer_root / "root/.cache/pip"
    assert not cache.exists() or not any(cache.iterdir())


def run_in(container: str, *argv: str) -> str:
    """``argv`` run inside the container as the images' user; its stdout. Fails with its stderr."""
    done = run_buildah("run", "--isolation", "chroot", "--user", "65532:65532", container, "--", *argv)
    assert done.returncode == 0, f"{argv} in the image failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return done.stdout.strip()


def test_storage_initializer_answers_as_uid_65532() -> None:
    with working_container("storage-initializer") as container:
        assert run_in(container, "python", "-c", "import os; print(os.getuid())") == "65532"


INSTALLED = """
import importlib.metadata, importlib.util, json
names = sorted({d.metadata["Name"].lower() for d in importlib.metadata.distributions()})
print(json.dumps({"distributions": names, "torch": importlib.util.find_spec("torch") is not None}))
"""
WITHOUT_TORCH = {"storage-initializer": {"botocore", "google-cloud-storage", "requests", "urllib3"},
                 "operator": {"kopf", "kubernetes", "jinja2", "pyyaml"}}


@pytest.mark.parametrize("target", sorted(WITHOUT_TORCH))
def test_the_storage_initializer_and_the_operator_hold_their_dependencies_and_no_torch(target: str) -> None:
    with working_container(target) as container:
        installed = json.loads(run_in(container, "python", "-c", INSTALLED))
    assert WITHOUT_TORCH[target] <= set(installed["distributions"])
    pulled = [d for d in installed["distributions"]
              if d in ("torch", "torchvision", "triton") or d.startswith("nvidia-")]
    assert not pulled, f"{target} installed torch or CUDA libraries: {pulled}"
    assert not installed["torch"], f"torch is importable in {target}"


WRITE_MODEL = "import os;os.mkdir('/tmp/model-src'); open('/tmp/model-src/model.mar', 'wb').write(b'archive')"


def test_the_storage_initializers_entrypoint_copies_a_local_model_into_the_model_dir() -> None:
    entrypoint = inspect("storage-initializer")["OCIv1"]["config"]["Entrypoint"]
    with working_container("storage-initializer") as container:
        assert "src_uri" in run_in(container, *entrypoint, "--help")
        run_in(container, "python", "-c", WRITE_MODEL)
        run_in(container, *entrypoint, "/tmp/model-src", "/tmp/mnt-models")
        copied = run_in(container, "python", "-c", "print(open('/tmp/mnt-models/model.mar', 'rb').read())")
    assert copied == "b'archive'"


RENDER_ISVC = {
    "apiVersion": "serving.kubeflow.org/v1beta1",
    "kind": "InferenceService",
    "metadata": {"name": "torchserve", "namespace": "default", "uid": "0000-1111"},
    "spec": {"predictor": {"pytorch": {"storageUri": "gs://kfserving-examples/models/torchserve/image_classifier"}}},
}
RENDER_PROBE = f"""
import json
import isvc_operator.__main__, isvc_operator.handlers
from isvc_operator.config import default_config
from isvc_operator.render import render_knative_service
print(json.dumps(render_knative_service({RENDER_ISVC!r}, default_config())))
"""


def test_the_operator_image_imports_its_handlers_and_renders_what_the_repository_renders() -> None:
    with working_container("operator") as container:
        ksvc = json.loads(run_in(container, "python", "-c", RENDER_PROBE))
    # The templates are the package data of isvc_operator.templates on the image's python path.
    assert ksvc == json.loads(json.dumps(render_knative_service(RENDER_ISVC, default_config())))
    [container_spec] = ksvc["spec"]["template"]["spec"]["containers"]
    [init] = ksvc["spec"]["template"]["spec"]["initContainers"]
    assert container_spec["args"][:2] == ["--model-store", "/mnt/models"]
    assert init["args"] == ["gs://kfserving-examples/models/torchserve/image_classifier", "/mnt/models"]


RUNTIME_PROBE = """
import importlib, json, pkgutil, sys
from pathlib import Path
import isvc_runtime
from isvc_runtime.loader import prepare

skipped = ("isvc_runtime.storage.", "isvc_runtime.__main__")  # the storage extra's; a command line
for module in pkgutil.walk_packages(isvc_runtime.__path__, "isvc_runtime."):
    if not module.name.startswith(skipped):
        importlib.import_module(module.name)
model = Path("/tmp/model")
(model / "MAR-INF").mkdir(parents=True)
(model / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(
    {"model": {"modelName": "m", "handler": "base_handler", "configFile": "model-config.yaml"}}
))
(model / "model-config.yaml").write_text("batchSize: 4\\nmaxBatchDelay: 20\\n")
_, _, model_yaml = prepare(model, model.parent / "work")
print(json.dumps(model_yaml))
"""


def test_every_runtime_module_imports_in_the_runtime_image_and_reads_model_config_yaml() -> None:
    """The runtime extra's dependencies (pyyaml among them) are all the image needs."""
    with working_container("runtime") as container:
        answer = run_in(container, "python", "-c", RUNTIME_PROBE)
    assert answer.splitlines()[-1] == '{"batchSize": 4, "maxBatchDelay": 20}'


def disk_bytes(path: Path) -> int:
    du = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=False).stdout
    return int(du.split()[0]) if du else 0


def test_images_and_their_containerd_copies_fit_the_disk_budget() -> None:
    buildah_store = Path(json.loads(buildah("info"))["store"]["GraphRoot"])
    containerd_store = Path.home() / ".cache" / "torch-isvc" / "node" / "containerd"
    used = {"buildah": disk_bytes(buildah_store), "containerd": disk_bytes(containerd_store)}
    assert sum(used.values()) <= BUDGET_BYTES, used
