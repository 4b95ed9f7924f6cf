"""The seed walkthrough end to end, driven through the same machinery as ``make demo`` (e2e/demo.py).

One walkthrough environment per module (its own control plane, operator with its ServiceAccount's
token, GCS emulator with the seed's bucket, Knative+kubelet stand-in, ingress); the tests run in file
order: the seed's steps, the canary at 20% and its rollback, the metrics and GPU samples, and last the
teardown. ``test_make_demo_check_*`` runs ``python -m e2e.demo --check`` itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e import REPO_ROOT
from e2e.demo import (
    EXAMPLES,
    MODEL_NAME,
    NAMESPACE,
    Walkthrough,
    own_sample_request,
    seed_request,
    shape,
    wait_for,
)
from e2e.processes import pid_alive
from e2e.standin.ingress import REVISION_HEADER

pytestmark = pytest.mark.slow

KSVC = "torchserve-predictor-default"
PREDICT = f"/v1/models/{MODEL_NAME}:predict"
SEED_URL = f"http://torchserve.{NAMESPACE}.example.com"


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walkthrough]:
    env = Walkthrough(tmp_path_factory.mktemp("walkthrough"), say=lambda line: None)
    try:
        env.start()
        yield env
    finally:
        env.stop()


@pytest.fixture(scope="module")
def request_file(walkthrough: Walkthrough) -> Path:
    return seed_request(walkthrough.workdir)


@pytest.fixture(scope="module")
def seed_isvc(walkthrough: Walkthrough) -> dict[str, Any]:
    """torchserve.yaml applied unmodified, Ready."""
    output = walkthrough.apply(EXAMPLES / "torchserve.yaml")
    assert output == "inferenceservice.serving.kubeflow.org/torchserve created"
    return walkthrough.wait_ready("torchserve")


def predictor(isvc: dict[str, Any]) -> dict[str, Any]:
    return ((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}


def host_of(walkthrough: Walkthrough, namespace: str = NAMESPACE) -> str:
    host = walkthrough.service_hostname(namespace=namespace)
    assert host, "the isvc has no status.url"
    return host


def split(walkthrough: Walkthrough, host: str, body: bytes, count: int) -> tuple[Counter[str], Counter[str]]:
    assert walkthrough.ingress is not None
    walkthrough.ingress.update_routes()
    return walkthrough.send_many(host, PREDICT, body, count)


# --- the seed's steps -----------------------------------------------------------------------------------


def test_seed_isvc_is_ready_in_kubectl_get_isvc(walkthrough: Walkthrough, seed_isvc: dict[str, Any]) -> None:
    table = walkthrough.kubectl("get", "-n", NAMESPACE, "isvc", "torchserve").stdout.splitlines()
    header, row = table[0].split(), table[1].split()
    columns = dict(zip(header, row, strict=False))
    assert columns["NAME"] == "torchserve" and columns["READY"] == "True", table
    assert predictor(seed_isvc)["latestReadyRevision"] == f"{KSVC}-00001"


def test_seed_url_is_the_top_level_host(walkthrough: Walkthrough, seed_isvc: dict[str, Any]) -> None:
    table = walkthrough.kubectl("get", "-n", NAMESPACE, "isvc", "torchserve").stdout.splitlines()
    assert seed_isvc["status"]["url"] == SEED_URL
    assert SEED_URL in table[1]


def test_seed_predict_curl_through_the_ingress_answers_2(
    walkthrough: Walkthrough, seed_isvc: dict[str, Any], request_file: Path
) -> None:
    status, body = walkthrough.curl(host_of(walkthrough), PREDICT, request_file)
    assert status == 200, body
    assert json.loads(body) == {"predictions": [2]}


def test_own_sample_request_is_a_2_too(walkthrough: Walkthrough, seed_isvc: dict[str, Any],
                                        tmp_path: Path) -> None:
    sample = tmp_path / "own.json"
    sample.write_text(json.dumps(own_sample_request()))
    status, body = walkthrough.curl(host_of(walkthrough), PREDICT, sample)
    assert (status, json.loads(body)) == (200, {"predictions": [2]})


def test_seed_explain_curl_returns_attributions_of_the_input_shape(
    walkthrough: Walkthrough, seed_isvc: dict[str, Any], request_file: Path
) -> None:
    status, body = walkthrough.curl(host_of(walkthrough), f"/v1/models/{MODEL_NAME}:explain", request_file)
    assert status == 200, body[:300]
    assert shape(json.loads(body)["explanations"]) == [1, 1, 28, 28]


def test_unknown_host_gets_a_json_404(walkthrough: Walkthrough, seed_isvc: dict[str, Any],
                                      request_file: Path) -> None:
    status, body = walkthrough.curl("nothing.example.com", PREDICT, request_file)
    assert status == 404 and "nothing.example.com" in json.loads(body)["error"]


def test_revisions_run_the_rendered_containers_as_local_processes(
    walkthrough: Walkthrough, seed_isvc: dict[str, Any]
) -> None:
    assert walkthrough.standin is not None
    pod = walkthrough.standin.pod(NAMESPACE, f"{KSVC}-00001")
    assert pod is not None and pod.state == "Ready"
    [init] = pod.plan.init
    assert init.argv[1:] == ["-m", "isvc_runtime.storage",
                             "gs://kfserving-examples/models/torchserve/image_classifier",
                             str(pod.plan.volume_dirs["kfserving-provision-location"])]
    assert (pod.logs / "storage-initializer.log").is_file()
    [runtime] = pod.plan.containers
    assert runtime.argv[1:5] == ["-m", "isvc_runtime", "--model-store",
                                 str(pod.plan.volume_dirs["kfserving-provision-location"])]
    assert all(pid_alive(pid) for pid in pod.pids) and len(pod.pids) == 1
    ready = httpx.get(f"{pod.url}/v2/health/ready", timeout=10)
    assert ready.status_code == 200


# --- canary and rollback ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def canary(walkthrough: Walkthrough, seed_isvc: dict[str, Any]) -> dict[str, Any]:
    """canary.yaml applied unmodified (v2 store, canaryTrafficPercent 20), its revision Ready."""
    output = walkthrough.apply(EXAMPLES / "canary.yaml")
    assert output == "inferenceservice.serving.kubeflow.org/torchserve configured"
    return walkthrough.wait_ready("torchserve", revision=f"{KSVC}-00002")


def test_canary_sends_20_percent_to_the_new_revision(
    walkthrough: Walkthrough, canary: dict[str, Any], request_file: Path
) -> None:
    requests = 2000
    revisions, answers = split(walkthrough, host_of(walkthrough), request_file.read_bytes(), requests)
    assert answers == Counter({'200 {"predictions":[2]}': requests}), answers
    share = 100.0 * revisions[f"{KSVC}-00002"] / requests
    ksvc = walkthrough.kubectl.get("-n", NAMESPACE, "services.serving.knative.dev", KSVC) or {}
    assert abs(share - 20.0) <= 4.0, (
        f"{share:.1f}% of {requests} requests reached the canary ({dict(revisions)}); "
        f"ksvc traffic: {ksvc.get('status', {}).get('traffic')}")
    assert revisions[f"{KSVC}-00001"] + revisions[f"{KSVC}-00002"] == requests


def test_each_revision_serves_its_own_model_version(walkthrough: Walkthrough, canary: dict[str, Any]) -> None:
    """The revision header the ingress adds is honest: 00001 serves mnist 1.0, 00002 serves 2.0."""
    assert walkthrough.ingress is not None
    url = f"{walkthrough.ingress.url}/v2/models/{MODEL_NAME}"
    seen: dict[str, set[str]] = {}
    with httpx.Client(timeout=30) as client:
        for _ in range(60):
            response = client.get(url, headers={"Host": host_of(walkthrough)})
            assert response.status_code == 200, response.text
            seen.setdefault(response.headers[REVISION_HEADER], set()).update(response.json()["versions"])
    expected = {f"{KSVC}-00001": {"1.0"}, f"{KSVC}-00002": {"2.0"}}
    assert seen and all(seen[revision] == expected[revision] for revision in seen), seen


def test_canary_rollback_restores_previous_revision(
    walkthrough: Walkthrough, canary: dict[str, Any], request_file: Path
) -> None:
    walkthrough.kubectl("patch", "-n", NAMESPACE, "isvc", "torchserve", "--type=merge",
                        "-p", json.dumps({"spec": {"predictor": {"canaryTrafficPercent": 0}}}))
    walkthrough.wait_ready("torchserve")
    requests = 300
    revisions, answers = split(walkthrough, host_of(walkthrough), request_file.read_bytes(), requests)
    assert answers == Counter({'200 {"predictions":[2]}': requests}), answers
    ksvc = walkthrough.kubectl.get("-n", NAMESPACE, "services.serving.knative.dev", KSVC) or {}
    assert revisions == Counter({f"{KSVC}-00001": requests}), (
        f"after canaryTrafficPercent: 0, {dict(revisions)}; ksvc traffic: "
        f"{ksvc.get('status', {}).get('traffic')}")


# --- failures are reported, not hidden -------------------------------------------------------------------


def test_revision_whose_storage_initializer_fails_is_reported_failed(walkthrough: Walkthrough) -> None:
    namespace = "broken-demo"
    isvc = {"apiVersion": "serving.kubeflow.org/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "broken"},
            "spec": {"predictor": {"pytorch": {"storageUri": "gs://kfserving-examples/models/missing"}}}}
    walkthrough.kubectl("create", "namespace", namespace)
    walkthrough.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(isvc))
    try:
        def failed() -> dict[str, Any] | None:
            kind = "services.serving.knative.dev"
            ksvc = walkthrough.kubectl.get("-n", namespace, kind, "broken-predictor-default")
            conditions = {c["type"]: c for c in ((ksvc or {}).get("status") or {}).get("conditions") or []}
            return conditions["Ready"] if conditions.get("Ready", {}).get("status") == "False" else None

        ready = wait_for(failed, 90, "the ksvc to report its failed revision")
        assert ready["reason"] == "RevisionFailed"
        assert "storage-initializer" in ready["message"], ready
        status = (walkthrough.kubectl.get("-n", namespace, "isvc", "broken") or {}).get("status") or {}
        assert not any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
        code, body = walkthrough.curl(f"broken-predictor-default.{namespace}.example.com", PREDICT,
                                      Path("/dev/null"))
        assert code == 404, body
    finally:
        walkthrough.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


# --- the other seed samples ------------------------------------------------------------------------------


def test_metrics_endpoint_reachable_on_the_scrape_port(walkthrough: Walkthrough, request_file: Path) -> None:
    namespace = "metrics-demo"
    walkthrough.apply(EXAMPLES / "metrics.yaml", namespace)
    try:
        isvc = walkthrough.wait_ready("torchserve", namespace)
        ksvc = walkthrough.kubectl.get("-n", namespace, "services.serving.knative.dev", KSVC) or {}
        annotations = ksvc["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        scrape_port = int(annotations["prometheus.io/port"])
        status, body = walkthrough.curl(host_of(walkthrough, namespace), PREDICT, request_file)
        assert (status, json.loads(body)) == (200, {"predictions": [2]})
        assert walkthrough.standin is not None
        pod = walkthrough.standin.pod(namespace, predictor(isvc)["latestReadyRevision"])
        assert pod is not None
        try:
            response = httpx.get(f"http://127.0.0.1:{pod.port(scrape_port)}/metrics", timeout=10)
        except httpx.HTTPError as exc:
            pytest.fail(f"nothing serves metrics on the pod's port {scrape_port}: {exc!r}")
        assert response.status_code == 200
        assert "ts_inference_requests_total" in response.text
    finally:
        walkthrough.kubectl("delete", "-n", namespace, "isvc", "torchserve", "--wait=false", check=False)


def test_gpu_sample_renders_its_gpu_request_and_serves_on_cpu(
    walkthrough: Walkthrough, request_file: Path
) -> None:
    namespace = "gpu-demo"
    walkthrough.apply(EXAMPLES / "gpu.yaml", namespace)
    try:
        walkthrough.wait_ready("torchserve", namespace)
        ksvc = walkthrough.kubectl.get("-n", namespace, "services.serving.knative.dev", KSVC) or {}
        [container] = ksvc["spec"]["template"]["spec"]["containers"]
        assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "1"
        assert container["image"].endswith("-gpu")
        status, body = walkthrough.curl(host_of(walkthrough, namespace), PREDICT, request_file)
        assert (status, json.loads(body)) == (200, {"predictions": [2]})
    finally:
        walkthrough.kubectl("delete", "-n", namespace, "isvc", "torchserve", "--wait=false", check=False)


def test_deleting_an_isvc_stops_its_revision_processes(walkthrough: Walkthrough) -> None:
    assert walkthrough.standin is not None
    standin = walkthrough.standin
    for namespace in ("gpu-demo", "metrics-demo"):
        walkthrough.kubectl("delete", "-n", namespace, "isvc", "torchserve", "--ignore-not-found")
    wait_for(lambda: not [k for k in list(standin.pods) if k[0] in ("gpu-demo", "metrics-demo")], 60,
             "the deleted isvcs' revisions to stop")


# --- teardown ------------------------------------------------------------------------------------------


def test_stopping_the_walkthrough_leaves_no_process_behind(walkthrough: Walkthrough) -> None:
    assert walkthrough.standin is not None and walkthrough.cluster is not None
    started = set(walkthrough.standin.all_pids()) | set(walkthrough.cluster.pids.values())
    assert started
    walkthrough.stop()
    deadline = time.monotonic() + 10
    while [pid for pid in started if pid_alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in started if pid_alive(pid)] == []
    assert walkthrough.leftover_pids() == []


# --- make demo-check -------------------------------------------------------------------------------------


def test_make_demo_check_passes_every_seed_check() -> None:
    """What `make demo-check` runs; exit 0 only when every output is as the seed says."""
    proc = subprocess.run([sys.executable, "-m", "e2e.demo", "--check"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert "processes left behind" not in proc.stderr
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    output = f"{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}"
    assert proc.returncode == 0 and not failed, "\n".join(failed) + "\n" + output
    for check in ("apply", "READY True", "URL", "predict", "explain", "canary answers", "canary split"):
        assert f"PASS  {check}:" in proc.stdout

