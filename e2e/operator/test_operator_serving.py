"""Serving end to end: the real operator renders the isvc, the Knative + kubelet stand-in runs the real
runtime with the rendered flags, env and probes, and predictions go through the ingress stand-in (gRPC
straight to the pod's port, the stand-in ingress speaking HTTP/1.1 only).

- `logger: {url: <a CloudEvents receiver on loopback>, mode: all}`: 100 predictions become exactly 100
  request and 100 response events (parsed by the cloudevents SDK), paired by id, the id the answer's
  x-request-id, the bodies those sent and answered; once the receiver stops, predictions keep answering and
  the runtime's dropped counter rises.
- `batcher: {maxBatchSize: 8, maxLatency: 50}` under 16 concurrent clients: the runtime's batch-size
  histogram shows batches of more than one row and none of more than eight.
- `protocolVersion: grpc-v2` with a logger: Ready once gRPC health says so, `ModelInfer` of an MNIST digit
  on the port the ksvc names (h2c) answers 2 under the request id it was given, and the call is logged as
  a request and a response event under that id, bodies the gRPC messages as framed on the wire.

This module runs its own control plane: a real runtime needs `ServingStandin`, which must not share the
cluster with the status-only `KnativeStandin` of the other operator tests (both would write ksvc status).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
import numpy as np
import pytest
from isvc_runtime.grpc.stubs import GRPCInferenceServiceStub, pb

from e2e import REPO_ROOT
from e2e.demo import shared_dir
from e2e.inference_services import ksvc_of, predictor_service, ready_isvc
from e2e.installation import EXAMPLES, OPERATOR_ACCOUNT, OPERATOR_NAMESPACE, OperatorProcess, install
from e2e.knative.webhook import APISERVER_FLAGS, KnativeWebhook
from e2e.localkube import ControlPlane, Kubectl
from e2e.polling import wait_for
from e2e.standin.ingress import Ingress
from e2e.standin.serving import ServingStandin
from tests.support.cloudevents_sink import cloudevents_sink

pytestmark = pytest.mark.slow

NAMESPACE = "logger-e2e"
PREDICT = "/v1/models/mnist:predict"
REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"


@dataclass
class Serving:
    cluster: ControlPlane
    operator: OperatorProcess
    standin: ServingStandin
    ingress: Ingress
    store: Path
    mnist_request: bytes

    @property
    def kubectl(self) -> Kubectl:
        return self.cluster.kubectl

    def apply(self, name: str, predictor: dict[str, Any], **pytorch: Any) -> str:
        """Apply the isvc, wait until it is Ready; its host (status.url's) for the ingress."""
        isvc = {"apiVersion": "serving.kubeflow.org/v1beta1", "kind": "InferenceService",
                "metadata": {"name": name},
                "spec": {"predictor": {"pytorch": {"storageUri": str(self.store), **pytorch}, **predictor}}}
        self.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(isvc))
        try:
            ready = wait_for(lambda: ready_isvc(self.kubectl, NAMESPACE, name), 240, f"isvc {name} Ready")
        except TimeoutError as exc:
            pytest.fail(f"{exc}\n--- operator log (tail) ---\n{self.operator.tail()}")
        return urlsplit(ready["status"]["url"]).hostname or ""

    def predict_many(self, host: str, count: int, concurrency: int) -> list[httpx.Response]:
        async def run() -> list[httpx.Response]:
            answers: list[httpx.Response] = []
            left = list(range(count))
            async with httpx.AsyncClient(base_url=self.ingress.url, timeout=120) as client:
                async def worker() -> None:
                    while left:
                        left.pop()
                        answers.append(await client.post(PREDICT, content=self.mnist_request, headers={
                            "Host": host, "content-type": "application/json"}))

                await asyncio.gather(*(worker() for _ in range(concurrency)))
            return answers

        return asyncio.run(run())

    def runtime_metrics(self, host: str) -> str:
        return httpx.get(f"{self.ingress.url}/metrics", headers={"Host": host}, timeout=30).text


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    workdir = tmp_path_factory.mktemp("logger-e2e")
    store = workdir / "store"
    subprocess.run([sys.executable, str(EXAMPLES / "build_model_store.py"), str(store)], check=True,
                   capture_output=True, text=True)
    mnist_request = (shared_dir() / "data" / "requests" / "v1" / "mnist.json").read_bytes()
    cluster = ControlPlane(apiserver_flags=APISERVER_FLAGS).start()
    parts: list[Any] = [cluster]
    try:
        # Knative's real CRDs and admission webhook, as in every other e2e module: the ksvc the operator
        # writes passes Knative's own defaulting and validation.
        knative = KnativeWebhook(cluster.kubeconfig)
        parts.append(knative)
        knative.start()
        install(cluster.kubectl)
        cluster.kubectl("create", "namespace", NAMESPACE)
        kubeconfig = wait_for(lambda: _operator_kubeconfig(cluster, workdir), 30, "the operator's account")
        operator = OperatorProcess(kubeconfig, workdir / "operator.log").start()
        parts.append(operator)
        standin = ServingStandin(cluster.kubeconfig, workdir / "pods", python=str(checkout_python(workdir)))
        standin.start()
        parts.append(standin)
        ingress = Ingress(cluster.kubeconfig, standin).start()
        parts.append(ingress)
        yield Serving(cluster, operator, standin, ingress, store, mnist_request)
    finally:
        for part in reversed(parts):
            part.stop()


def checkout_python(workdir: Path) -> Path:
    """The virtual environment's Python, running this checkout's runtime. The stand-in passes no PYTHONPATH
    to its pods, so they would import whatever checkout the environment's editable install names."""
    shim = workdir / "python"
    path = ":".join(str(REPO_ROOT / part) for part in ("runtime", "operator", "."))
    shim.write_text(f'#!/bin/sh\nPYTHONPATH="{path}" exec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)
    return shim


def _operator_kubeconfig(cluster: ControlPlane, workdir: Path) -> Path | None:
    try:
        return cluster.service_account_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT,
                                                  workdir / "operator.kubeconfig")
    except RuntimeError:
        return None


def counter(metrics: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", metrics, re.MULTILINE))


def test_logger_sends_each_prediction_as_a_paired_cloudevent_and_a_stopped_receiver_costs_no_answer(
    serving: Serving
) -> None:
    with cloudevents_sink() as sink:
        host = serving.apply("logged", {"logger": {"url": sink.url, "mode": "all"}})
        answers = serving.predict_many(host, 100, concurrency=8)
        assert [a.status_code for a in answers] == [200] * 100, {a.text for a in answers}
        wait_for(lambda: len(sink.received) >= 200, 60, "200 events")
        wait_for(lambda: counter(serving.runtime_metrics(host), "isvc_logger_events_sent_total") >= 200, 30,
                 "200 events counted as sent")
        requests = {r.event.get_id(): r for r in sink.received if r.event.get_type() == REQUEST}
        responses = {r.event.get_id(): r for r in sink.received if r.event.get_type() == RESPONSE}
        assert len(sink.received) == 200 and len(requests) == len(responses) == 100
        ids = {a.headers["x-request-id"] for a in answers}
        assert set(requests) == set(responses) == ids
        for answer in answers:
            event_id = answer.headers["x-request-id"]
            assert requests[event_id].body == serving.mnist_request
            assert responses[event_id].body == answer.content
        event = next(iter(requests.values())).event
        assert (event.get_extension("inferenceservicename"), event.get_extension("namespace"),
                event.get_extension("component")) == ("logged", NAMESPACE, "predictor")
        # The receiver goes away: what keeps a connection open answers 503, a new connection is refused.
        sink.answer = lambda _number: 503
    before = counter(serving.runtime_metrics(host), "isvc_logger_events_dropped_total")
    answers = serving.predict_many(host, 20, concurrency=8)
    assert [(a.status_code, a.json()) for a in answers] == [(200, {"predictions": [2]})] * 20
    wait_for(lambda: counter(serving.runtime_metrics(host), "isvc_logger_events_dropped_total") > before, 60,
             "the dropped counter to rise")
    assert len(sink.received) == 200


def test_batcher_sets_the_runtimes_batch_size_and_delay_under_concurrent_load(serving: Serving) -> None:
    host = serving.apply("batched", {"batcher": {"maxBatchSize": 8, "maxLatency": 50}})
    answers = serving.predict_many(host, 160, concurrency=16)
    assert [a.status_code for a in answers] == [200] * 160
    metrics = serving.runtime_metrics(host)
    buckets = {}
    for labels, value in re.findall(r"^isvc_batch_size_bucket\{([^}]*)\} (\S+)$", metrics, re.MULTILINE):
        label = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if label["model"] == "mnist":
            buckets[float(label["le"])] = float(value)
    calls = buckets[float("inf")]
    rows = counter(metrics, r"isvc_batch_size_sum")
    assert rows == 160
    assert buckets[1.0] < calls, "no batch of more than one row"
    assert buckets[8.0] == calls, "a batch of more than eight rows"


def digit_request(mnist_request: bytes, model: str) -> Any:
    """The v1 request's PNG as the FP32 ``[1, 1, 28, 28]`` tensor MNIST's handler normalises to."""
    from PIL import Image

    png = base64.b64decode(json.loads(mnist_request)["instances"][0]["data"])
    pixels = np.asarray(Image.open(io.BytesIO(png)), dtype=np.float32) / 255.0
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="input-0", datatype="FP32", shape=[1, 1, 28, 28])
    tensor.contents.fp32_contents.extend(((pixels - 0.1307) / 0.3081).ravel().tolist())
    return request


def test_grpc_v2_becomes_ready_and_infers_an_mnist_digit_over_grpc_on_the_port_its_ksvc_names(
    serving: Serving
) -> None:
    with cloudevents_sink() as sink:
        serving.apply("grpc", {"logger": {"url": sink.url}}, protocolVersion="grpc-v2")
        ksvc = ksvc_of(serving.kubectl, NAMESPACE, predictor_service("grpc"))
        assert ksvc is not None
        [container] = ksvc["spec"]["template"]["spec"]["containers"]
        [port] = container["ports"]
        assert (port["name"], port["containerPort"]) == ("h2c", 8081)
        assert container["readinessProbe"]["grpc"]["port"] == 8081
        pod = serving.standin.pod(NAMESPACE, ksvc["status"]["latestReadyRevisionName"])
        assert pod is not None
        request = digit_request(serving.mnist_request, "grpc")
        with grpc.insecure_channel(f"127.0.0.1:{pod.port(port['containerPort'])}") as channel:
            answer, call = GRPCInferenceServiceStub(channel).ModelInfer.with_call(
                request, metadata=(("x-request-id", "grpc-e2e-1"),), timeout=60)
        assert list(answer.outputs[0].contents.int64_contents) == [2]
        assert dict(call.trailing_metadata())["x-request-id"] == "grpc-e2e-1"
        wait_for(lambda: len(sink.received) >= 2, 60, "the call's two events")
        events = {r.event.get_type(): r for r in sink.received}
        assert {r.event.get_id() for r in sink.received} == {"grpc-e2e-1"}
        framed = events[REQUEST].body
        assert events[REQUEST].event.get_extension("inferenceservicename") == "grpc"
        assert pb.ModelInferRequest.FromString(framed[5:]) == request
        assert pb.ModelInferResponse.FromString(events[RESPONSE].body[5:]) == answer
