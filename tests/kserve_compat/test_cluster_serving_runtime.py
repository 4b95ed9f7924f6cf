"""deploy/kserve/cluster-serving-runtime.yaml: what KServe selects and renders from it (kserve_render, after
KServe's controller), and that exact command line serving the MNIST TorchServe store once per protocol.

The rendered command runs as in the pod: the image's ENTRYPOINT plus the rendered args and env, the store
at /mnt/models, listening on KServe's ports (8080, 8082; 8081 for gRPC). It runs in network and mount
namespaces of its own (``unshare``), so those fixed ports meet nothing else on this machine and /mnt/models
exists only for it; the requests are sent from inside that network namespace, over its loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from clients_harness import runtime_accepts
from images.dockerfile_stages import effective, exec_form, parse_stages
from kserve_render import inference_service, predictor_container, serving_port
from support.runtime import build_mnist_store

from e2e.processes import stop

REPO_ROOT = Path(__file__).resolve().parents[2]
CSR_PATH = REPO_ROOT / "deploy" / "kserve" / "cluster-serving-runtime.yaml"
PROBE = Path(__file__).with_name("netns_probe.py")
KSERVE_TORCHSERVE_PRIORITY = 2  # kserve/kserve config/runtimes/kserve-torchserve.yaml
ISVC = "torchserve"  # the seed's InferenceService name
H2C_8081 = [{"name": "h2c", "containerPort": 8081, "protocol": "TCP"}]
SRC_PATH = os.pathsep.join(str(REPO_ROOT / part) for part in ("operator", "runtime", ""))
EXAMPLE_DIR = REPO_ROOT / "examples" / "mnist"
# The example's scripts import each other by plain name (``from data import ...``), as they do when run.
if str(EXAMPLE_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLE_DIR))


@pytest.fixture(scope="module")
def csr() -> dict[str, Any]:
    return yaml.safe_load(CSR_PATH.read_text())


def makefile_default(name: str) -> str:
    match = re.search(rf"^{name} := (\S+)$", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, name
    return match.group(1)


def test_pytorch_models_auto_select_it_ahead_of_kserve_torchserve(csr: dict[str, Any]) -> None:
    assert csr["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert csr["kind"] == "ClusterServingRuntime"
    (pytorch,) = [f for f in csr["spec"]["supportedModelFormats"] if f["name"] == "pytorch"]
    assert pytorch["autoSelect"] is True
    assert pytorch["version"] == "1"  # an isvc's modelFormat version "1" must match too
    assert pytorch["priority"] > KSERVE_TORCHSERVE_PRIORITY
    assert csr["spec"]["protocolVersions"] == ["v1", "v2", "grpc-v2"]
    assert csr["metadata"]["annotations"]["serving.kserve.io/server-type"] == "torchserve"


def test_image_is_the_makefiles_runtime_image_and_gpu_requests_get_its_gpu_image(csr: dict[str, Any]) -> None:
    image = f"{makefile_default('DEFAULT_REGISTRY')}/runtime:{makefile_default('DEFAULT_VERSION')}"
    assert predictor_container(csr, inference_service(ISVC))["image"] == image
    gpu = inference_service(ISVC, resources={"limits": {"nvidia.com/gpu": "1"}})
    assert predictor_container(csr, gpu)["image"] == f"{image}-gpu"  # the Makefile's RUNTIME_GPU_IMAGE


def test_metrics_annotation_names_the_port_the_runtime_serves_metrics_on(csr: dict[str, Any]) -> None:
    annotations = csr["spec"]["annotations"]
    args = predictor_container(csr, inference_service(ISVC))["args"]
    assert f"--metrics-port={annotations['prometheus.kserve.io/port']}" in args
    assert annotations["prometheus.kserve.io/path"] == "/metrics"


@pytest.mark.parametrize(
    ("protocol", "envelope"),
    [(None, "kserve"), ("v1", "kserve"), ("v2", "kservev2"), ("grpc-v2", "kservev2")],
)
def test_rendered_container_names_the_isvc_and_carries_the_torchserve_envelope(
    csr: dict[str, Any], protocol: str | None, envelope: str
) -> None:
    container = predictor_container(csr, inference_service("sample", protocol=protocol))
    assert container["args"][:5] == [
        "--model-store=/mnt/models",
        "--model-name=sample",
        "--http-port=8080",
        "--grpc-port=8081",
        "--metrics-port=8082",
    ]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {"TS_SERVICE_ENVELOPE": envelope, "PROTOCOL_VERSION": protocol or "v1"}


def test_isvc_args_follow_the_runtimes_and_isvc_env_overrides_by_name(csr: dict[str, Any]) -> None:
    isvc = inference_service(
        "sample", args=["--workers=2"], env=[{"name": "TS_SERVICE_ENVELOPE", "value": "json"}]
    )
    container = predictor_container(csr, isvc)
    assert container["args"][-1] == "--workers=2"
    assert {"name": "TS_SERVICE_ENVELOPE", "value": "json"} in container["env"]


@pytest.mark.parametrize("mode", ["Serverless", "RawDeployment"])
def test_http_protocols_are_served_on_8080_and_grpc_v2_on_the_declared_h2c_port(
    csr: dict[str, Any], mode: str
) -> None:
    for protocol in ("v1", "v2"):
        port = serving_port(predictor_container(csr, inference_service(ISVC, protocol=protocol)), mode=mode)
        assert (port.port, port.http2) == (8080, False)
        assert f"--http-port={port.port}" in predictor_container(csr, inference_service(ISVC))["args"]
    grpc = inference_service(ISVC, protocol="grpc-v2", ports=H2C_8081)
    port = serving_port(predictor_container(csr, grpc), mode=mode)
    assert (port.port, port.http2) == (8081, True)


def test_knative_refuses_a_second_port_so_the_runtime_declares_none(csr: dict[str, Any]) -> None:
    (container,) = csr["spec"]["containers"]
    assert "ports" not in container
    two = {"ports": [{"containerPort": 8080}, {"name": "h2c", "containerPort": 8081}]}
    with pytest.raises(ValueError, match="single container port"):
        serving_port(two, mode="Serverless")


def test_grpc_port_flag_is_passed(csr: dict[str, Any]) -> None:
    assert runtime_accepts("--grpc-port", "8081")
    assert "--grpc-port=8081" in predictor_container(csr, inference_service(ISVC))["args"]


# --- the rendered command line, run ---------------------------------------------------------------------


def pod_command(container: dict[str, Any]) -> list[str]:
    """The image's ENTRYPOINT (or the container's command) plus its args; ``python`` is this interpreter."""
    entrypoint = container.get("command") or exec_form(effective(parse_stages(), "runtime", "ENTRYPOINT"))
    command = [*entrypoint, *container["args"]]
    return [sys.executable if command[0] == "python" else command[0], *command[1:]]


def namespaces_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return False
    return subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True).returncode == 0


# In the new mount namespace: a private tmpfs on /mnt with the store bound at /mnt/models; loopback up.
POD_SHELL = (
    'mount -t tmpfs tmpfs /mnt && mkdir /mnt/models && mount --bind "$0" /mnt/models'
    ' && ip link set lo up && exec "$@"'
)


def wait_own_network(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Until ``process`` is in a network namespace other than ours: entering it earlier (before ``unshare``
    made it) would send the probe's requests to whatever listens on this machine's own port 8080."""
    ours = os.readlink("/proc/self/ns/net")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the pod's command exited with {process.returncode}"
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{process.pid}/ns/net") != ours:
                return
        time.sleep(0.05)
    raise AssertionError(f"no network namespace of its own after {timeout} s")


@pytest.fixture(scope="module")
def mnist_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not namespaces_available():
        pytest.skip("needs unshare/nsenter with network and mount namespaces (root)")
    return build_mnist_store(tmp_path_factory.mktemp("kserve-store"))


@pytest.fixture
def pod(mnist_store: Path, tmp_path: Path) -> Iterator[Any]:
    """``pod(container, http=[(method, path or URL, json)], grpc_model=...)`` runs the rendered container's
    command in its namespaces, then sends the requests from inside (netns_probe.py): HTTP paths go to the
    port KServe serves (Serverless), gRPC to that port when it is h2c. Returns netns_probe's answer."""
    started: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "runtime.log"

    def run(container: dict[str, Any], http: Any = (), grpc_model: str | None = None) -> dict[str, Any]:
        env = {**os.environ, "PYTHONPATH": SRC_PATH, **{e["name"]: e["value"] for e in container["env"]}}
        argv = ["unshare", "--net", "--mount", "--", "sh", "-c", POD_SHELL, str(mnist_store)]
        with log.open("wb") as out:
            process = subprocess.Popen([*argv, *pod_command(container)], env=env, stdout=out, stderr=out)
        started.append(process)
        wait_own_network(process)
        port = serving_port(container, mode="Serverless")
        base = f"http://127.0.0.1:{port.port}"
        plan: dict[str, Any] = {
            "ready_url": "http://127.0.0.1:8080/v2/health/ready",
            "http": [
                {"method": method, "url": url if url.startswith("http") else base + url, "json": body}
                for method, url, body in http
            ],
        }
        if grpc_model is not None:
            assert port.http2, port
            plan["grpc"] = {
                "target": f"127.0.0.1:{port.port}",
                "model": grpc_model,
                "digit": digit_fp32(),
            }
        plan_path = tmp_path / "plan.json"
        plan_path.write_text(json.dumps(plan))
        result = subprocess.run(
            ["nsenter", f"--target={process.pid}", "--net", "--", sys.executable, str(PROBE), str(plan_path)],
            env={**os.environ, "PYTHONPATH": SRC_PATH},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{result.stderr}\nruntime log:\n{log.read_text(errors='replace')}"
        return json.loads(result.stdout)

    yield run
    for process in started:
        stop(process, 20, kill_timeout=10)


def digit_png_b64() -> str:
    """The seed request's PNG (a "2"), read as examples/mnist reads it (../shared, $TORCH_ISVC_SHARED_DIR)."""
    from data import mnist_request_path

    return json.loads(mnist_request_path().read_text())["instances"][0]["data"]


def digit_fp32() -> list:
    from data import decode_png_b64, to_tensor

    return to_tensor(decode_png_b64(digit_png_b64())[None]).tolist()


@pytest.mark.slow
def test_rendered_v1_command_serves_the_mnist_request_under_the_isvc_name(
    csr: dict[str, Any], pod: Any
) -> None:
    body = {"instances": [{"data": digit_png_b64()}]}
    answer = pod(
        predictor_container(csr, inference_service(ISVC, protocol="v1")),
        http=[
            ("POST", f"/v1/models/{ISVC}:predict", body),
            ("POST", "/v1/models/mnist:predict", body),
            ("GET", f"/v1/models/{ISVC}", None),
            ("GET", "http://127.0.0.1:8082/metrics", None),
        ],
    )
    by_name, by_model, model_status, metrics = answer["http"]
    assert by_name == {"status": 200, "body": {"predictions": [2]}}
    assert by_model == by_name
    assert model_status["status"] == 200
    assert metrics["status"] == 200 and "# TYPE" in metrics["body"]


@pytest.mark.slow
def test_rendered_v2_command_infers_an_fp32_digit_under_the_isvc_name(csr: dict[str, Any], pod: Any) -> None:
    container = predictor_container(csr, inference_service(ISVC, protocol="v2"))
    assert {"name": "TS_SERVICE_ENVELOPE", "value": "kservev2"} in container["env"]
    tensor = {"name": "input-0", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": digit_fp32()}
    answer = pod(
        container,
        http=[
            ("POST", f"/v2/models/{ISVC}/infer", {"inputs": [tensor]}),
            ("GET", f"/v2/models/{ISVC}/ready", None),
        ],
    )
    infer, ready = answer["http"]
    assert infer["status"] == 200, infer
    assert [int(v) for v in infer["body"]["outputs"][0]["data"]] == [2]
    assert ready["status"] == 200


@pytest.mark.slow
def test_rendered_grpc_v2_command_answers_on_the_declared_h2c_port(csr: dict[str, Any], pod: Any) -> None:
    container = predictor_container(csr, inference_service(ISVC, protocol="grpc-v2", ports=H2C_8081))
    answer = pod(container, grpc_model=ISVC)
    assert answer["grpc"] == {"ready": True, "datatype": "INT64", "data": [2]}
