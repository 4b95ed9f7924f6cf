"""The walkthrough end to end (KFServing's TorchServe example: examples/mnist's YAMLs unmodified), driven
through the same machinery as ``make demo`` (e2e/demo.py).

One walkthrough environment per module (its own control plane, operator with its ServiceAccount's token,
GCS emulator with the example's bucket, Knative+kubelet stand-in, ingress). Each test sets up what it
checks, and a test that changes an isvc does so in a namespace of its own: every test passes alone and
in any order. ``test_make_demo_check_*`` reads the result of ``python -m e2e.demo --check`` itself, which
also checks that stopping everything leaves no process behind: that command runs its own environment, so
it is started in the background as the module begins (when the run includes that test) and its minute
overlaps with the module's other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e import REPO_ROOT
from e2e.demo import MODEL_NAME, NAMESPACE, Walkthrough, mnist_request, own_sample_request, shape
from e2e.inference_services import KNATIVE_SERVICES, KSVC, predictor_status
from e2e.installation import EXAMPLES
from e2e.polling import wait_for
from e2e.processes import die_with_parent, pid_alive, stop
from e2e.standin.ingress import REVISION_HEADER

pytestmark = pytest.mark.slow

PREDICT = f"/v1/models/{MODEL_NAME}:predict"
ISVC_URL = f"http://torchserve.{NAMESPACE}.example.com"


DEMO_CHECK = "test_make_demo_check_passes_every_check_and_leaves_no_process_behind"


@dataclass
class DemoCheckRun:
    """`make demo-check`'s command with its pods as local processes, running in the background."""

    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def result(self, timeout: float) -> tuple[int, str, str]:
        """Its exit status, stdout and stderr once it has finished."""
        returncode = self.proc.wait(timeout=timeout)
        return returncode, self.stdout.read_text(errors="replace"), self.stderr.read_text(errors="replace")


@pytest.fixture(scope="module", autouse=True)
def demo_check(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoCheckRun | None]:
    """``python -m e2e.demo --check --pods processes`` started before the module's first test when the run
    includes the test that reads its result (None otherwise); stopped (SIGTERM: it cleans up) if that test
    did not wait for it."""
    if not any(item.name == DEMO_CHECK and item.path == request.path for item in request.session.items):
        yield None
        return
    logs = tmp_path_factory.mktemp("demo-check")
    with (logs / "stdout").open("wb") as out, (logs / "stderr").open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "e2e.demo", "--check", "--pods", "processes"],
                                cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True, preexec_fn=die_with_parent)
    try:
        yield DemoCheckRun(proc, logs / "stdout", logs / "stderr")
    finally:
        stop(proc, 60)


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
    return mnist_request(walkthrough.workdir)


@pytest.fixture(scope="module")
def torchserve_isvc(walkthrough: Walkthrough) -> dict[str, Any]:
    """torchserve.yaml applied unmodified in the walkthrough's namespace, Ready (tests only read it)."""
    output = walkthrough.apply(EXAMPLES / "torchserve.yaml")
    assert output == "inferenceservice.serving.kubeflow.org/torchserve created"
    return walkthrough.wait_ready("torchserve")


def host_of(walkthrough: Walkthrough, namespace: str = NAMESPACE) -> str:
    host = walkthrough.service_hostname(namespace=namespace)
    assert host, "the isvc has no status.url"
    return host


def split(walkthrough: Walkthrough, host: str, body: bytes, count: int) -> tuple[Counter[str], Counter[str]]:
    assert walkthrough.ingress is not None
    walkthrough.ingress.update_routes()
    return walkthrough.send_many(host, PREDICT, body, count)


def roll_out_canary(walkthrough: Walkthrough, namespace: str) -> dict[str, Any]:
    """torchserve.yaml, then canary.yaml (v2 store, canaryTrafficPercent 20) in ``namespace``; the isvc
    once the canary's revision is its latest ready one."""
    walkthrough.apply(EXAMPLES / "torchserve.yaml", namespace)
    walkthrough.wait_ready("torchserve", namespace, revision=f"{KSVC}-00001")
    output = walkthrough.apply(EXAMPLES / "canary.yaml", namespace)
    assert output == "inferenceservice.serving.kubeflow.org/torchserve configured"
    return walkthrough.wait_ready("torchserve", namespace, revision=f"{KSVC}-00002")


def delete_namespace(walkthrough: Walkthrough, namespace: str) -> None:
    walkthrough.kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found", check=False)


# --- the walkthrough's steps ---------------------------------------------------------------------------


def test_torchserve_isvc_is_ready_in_kubectl_get_isvc(
    walkthrough: Walkthrough, torchserve_isvc: dict[str, Any]
) -> None:
    table = walkthrough.kubectl("get", "-n", NAMESPACE, "isvc", "torchserve").stdout.splitlines()
    header, row = table[0].split(), table[1].split()
    columns = dict(zip(header, row, strict=False))
    assert columns["NAME"] == "torchserve" and columns["READY"] == "True", table
    assert predictor_status(torchserve_isvc)["latestReadyRevision"] == f"{KSVC}-00001"


def test_isvc_url_is_the_top_level_host(walkthrough: Walkthrough, torchserve_isvc: dict[str, Any]) -> None:
    table = walkthrough.kubectl("get", "-n", NAMESPACE, "isvc", "torchserve").stdout.splitlines()
    assert torchserve_isvc["status"]["url"] == ISVC_URL
    assert ISVC_URL in table[1]


def test_predict_curl_through_the_ingress_answers_2(
    walkthrough: Walkthrough, torchserve_isvc: dict[str, Any], request_file: Path
) -> None:
    status, body = walkthrough.curl(host_of(walkthrough), PREDICT, request_file)
    assert status == 200, body
    assert json.loads(body) == {"predictions": [2]}


def test_own_sample_request_is_a_2_too(walkthrough: Walkthrough, torchserve_isvc: dict[str, Any],
                                        tmp_path: Path) -> None:
    sample = tmp_path / "own.json"
    sample.write_text(json.dumps(own_sample_request()))
    status, body = walkthrough.curl(host_of(walkthrough), PREDICT, sample)
    assert (status, json.loads(body)) == (200, {"predictions": [2]})


def test_explain_curl_returns_attributions_of_the_input_shape(
    walkthrough: Walkthrough, torchserve_isvc: dict[str, Any], request_file: Path
) -> None:
    status, body = walkthrough.curl(host_of(walkthrough), f"/v1/models/{MODEL_NAME}:explain", request_file)
    assert status == 200, body[:300]
    assert shape(json.loads(body)["explanations"]) == [1, 1, 28, 28]


def test_unknown_host_gets_a_json_404(walkthrough: Walkthrough, request_file: Path) -> None:
    status, body = walkthrough.curl("nothing.example.com", PREDICT, request_file)
    assert status == 404 and "nothing.example.com" in json.loads(body)["error"]


def test_revisions_run_the_rendered_containers_as_local_processes(
    walkthrough: Walkthrough, torchserve_isvc: dict[str, Any]
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


def each_revision_serves(walkthrough: Walkthrough, namespace: str) -> dict[str, set[str]]:
    """The model versions each revision answers with, by the revision header the ingress adds (60 GETs)."""
    assert walkthrough.ingress is not None
    url = f"{walkthrough.ingress.url}/v2/models/{MODEL_NAME}"
    host = host_of(walkthrough, namespace)
    seen: dict[str, set[str]] = {}
    with httpx.Client(timeout=30) as client:
        for _ in range(60):
            response = client.get(url, headers={"Host": host})
            assert response.status_code == 200, response.text
            seen.setdefault(response.headers[REVISION_HEADER], set()).update(response.json()["versions"])
    return seen


def test_canary_revisions_serve_their_own_model_versions_and_rollback_restores_the_previous_one(
    walkthrough: Walkthrough, request_file: Path
) -> None:
    """The canary at 20%: the revision header the ingress adds is honest (00001 serves mnist 1.0, 00002
    serves 2.0); canaryTrafficPercent 0 then sends every request to 00001. (That the canary receives 20% of
    2000 requests, each answered {"predictions": [2]}, is demo-check's "canary split" and "canary answers",
    asserted by test_make_demo_check_passes_every_check_and_leaves_no_process_behind.)"""
    namespace = "rollback-demo"
    try:
        roll_out_canary(walkthrough, namespace)
        seen = each_revision_serves(walkthrough, namespace)
        expected = {f"{KSVC}-00001": {"1.0"}, f"{KSVC}-00002": {"2.0"}}
        assert seen and all(seen[revision] == expected[revision] for revision in seen), seen
        walkthrough.kubectl("patch", "-n", namespace, "isvc", "torchserve", "--type=merge",
                            "-p", json.dumps({"spec": {"predictor": {"canaryTrafficPercent": 0}}}))
        walkthrough.wait_ready("torchserve", namespace)
        requests = 300
        revisions, answers = split(walkthrough, host_of(walkthrough, namespace), request_file.read_bytes(),
                                   requests)
        assert answers == Counter({'200 {"predictions":[2]}': requests}), answers
        ksvc = walkthrough.kubectl.get("-n", namespace, KNATIVE_SERVICES, KSVC) or {}
        assert revisions == Counter({f"{KSVC}-00001": requests}), (
            f"after canaryTrafficPercent: 0, {dict(revisions)}; ksvc traffic: "
            f"{ksvc.get('status', {}).get('traffic')}")
    finally:
        delete_namespace(walkthrough, namespace)


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
            ksvc = walkthrough.kubectl.get("-n", namespace, KNATIVE_SERVICES, "broken-predictor-default")
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
        delete_namespace(walkthrough, namespace)


# --- the other example isvcs ------------------------------------------------------------------------------


def test_metrics_endpoint_reachable_on_the_scrape_port(walkthrough: Walkthrough, request_file: Path) -> None:
    namespace = "metrics-demo"
    walkthrough.apply(EXAMPLES / "metrics.yaml", namespace)
    try:
        isvc = walkthrough.wait_ready("torchserve", namespace)
        ksvc = walkthrough.kubectl.get("-n", namespace, KNATIVE_SERVICES, KSVC) or {}
        annotations = ksvc["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        scrape_port = int(annotations["prometheus.io/port"])
        status, body = walkthrough.curl(host_of(walkthrough, namespace), PREDICT, request_file)
        assert (status, json.loads(body)) == (200, {"predictions": [2]})
        assert walkthrough.standin is not None
        pod = walkthrough.standin.pod(namespace, predictor_status(isvc)["latestReadyRevision"])
        assert pod is not None
        try:
            response = httpx.get(f"http://127.0.0.1:{pod.port(scrape_port)}/metrics", timeout=10)
        except httpx.HTTPError as exc:
            pytest.fail(f"nothing serves metrics on the pod's port {scrape_port}: {exc!r}")
        assert response.status_code == 200
        assert "ts_inference_requests_total" in response.text
    finally:
        delete_namespace(walkthrough, namespace)


def test_gpu_sample_renders_its_gpu_request_and_serves_on_cpu(
    walkthrough: Walkthrough, request_file: Path
) -> None:
    namespace = "gpu-demo"
    walkthrough.apply(EXAMPLES / "gpu.yaml", namespace)
    try:
        walkthrough.wait_ready("torchserve", namespace)
        ksvc = walkthrough.kubectl.get("-n", namespace, KNATIVE_SERVICES, KSVC) or {}
        [container] = ksvc["spec"]["template"]["spec"]["containers"]
        assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "1"
        assert container["image"].endswith("-gpu")
        status, body = walkthrough.curl(host_of(walkthrough, namespace), PREDICT, request_file)
        assert (status, json.loads(body)) == (200, {"predictions": [2]})
    finally:
        delete_namespace(walkthrough, namespace)


def test_deleting_an_isvc_stops_its_revision_processes(walkthrough: Walkthrough) -> None:
    assert walkthrough.standin is not None
    standin = walkthrough.standin
    namespace = "delete-demo"
    walkthrough.apply(EXAMPLES / "torchserve.yaml", namespace)
    try:
        walkthrough.wait_ready("torchserve", namespace)
        pod = standin.pod(namespace, f"{KSVC}-00001")
        assert pod is not None and pod.pids
        pids = pod.pids
        walkthrough.kubectl("delete", "-n", namespace, "isvc", "torchserve")
        wait_for(lambda: not [key for key in list(standin.pods) if key[0] == namespace], 60,
                 "the deleted isvc's revisions to be dropped")
        wait_for(lambda: not [pid for pid in pids if pid_alive(pid)], 30, "their processes to exit")
    finally:
        delete_namespace(walkthrough, namespace)


# --- make demo-check -------------------------------------------------------------------------------------


def test_make_demo_check_passes_every_check_and_leaves_no_process_behind(
    demo_check: DemoCheckRun | None,
) -> None:
    """What `make demo-check` runs, its pods as local processes (the walkthrough on the real node is
    e2e/node/test_walkthrough_on_node.py), started by the ``demo_check`` fixture; exit 0 only when every
    output is as the walkthrough says and stopping left no process behind."""
    assert demo_check is not None, "the demo_check fixture starts it whenever this test is collected"
    returncode, stdout, stderr = demo_check.result(timeout=600)
    assert stdout.startswith("pods: local processes (stand-in) because --pods processes was asked for\n")
    assert "processes left behind" not in stderr
    failed = [line for line in stdout.splitlines() if line.startswith("FAIL")]
    output = f"{stdout[-1500:]}\n{stderr[-1500:]}"
    assert returncode == 0 and not failed, "\n".join(failed) + "\n" + output
    for check in ("apply", "READY True", "URL", "predict", "explain", "canary answers", "canary split"):
        assert f"PASS  {check}:" in stdout
