"""The payload logger in the running server (``python -m isvc_runtime`` with the flags and env the operator
renders for a grpc-v2 isvc's ``logger`` and ``batcher``): v1, v2, explain and gRPC ModelInfer requests and
answers reach a real CloudEvents receiver as paired events whose id is the answer's x-request-id, with the
bodies as sent and answered; a sink that refuses connections or never answers costs no inference its answer,
and the drops are counted on /metrics."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from isvc_runtime.grpc.stubs import SERVICE_NAME, GRPCInferenceServiceStub, pb
from isvc_runtime.payload_logger import REQUEST, RESPONSE
from runtime_support import MNIST_REQUEST, RuntimeProcess, build_mnist_store
from support.cloudevents_sink import CloudEventsSink, cloudevents_sink

from e2e.processes import free_port, refusing_port

BATCHER_FLAGS = ("--batch-size", "8", "--max-batch-delay", "50", "--response-timeout", "30")
IDENTITY_ENV = {"ISVC_NAME": "torchserve", "ISVC_NAMESPACE": "kfserving-test",
                "K_SERVICE": "torchserve-predictor-default",
                "K_REVISION": "torchserve-predictor-default-00001", "PROTOCOL_VERSION": "grpc-v2"}
GRPC_CONTENT_TYPE = "application/grpc"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_mnist_store(tmp_path_factory.mktemp("mnist-logged"))


def start(store: Path, log: Path, url: str) -> RuntimeProcess:
    grpc_port = free_port()
    process = RuntimeProcess(store, log, "--model-name", "torchserve", *BATCHER_FLAGS,
                             "--logger-url", url, "--logger-mode", "all", "--metrics-port", "0",
                             "--grpc-port", str(grpc_port), env=IDENTITY_ENV)
    process.grpc_port = grpc_port  # type: ignore[attr-defined]
    process.wait_ready()
    return process


def framed(message: bytes) -> bytes:
    """One gRPC length-prefixed message, uncompressed: what the HTTP/2 body of a unary call carries."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


@pytest.fixture(scope="module")
def logged_server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[RuntimeProcess, CloudEventsSink]]:
    with cloudevents_sink() as sink:
        process = start(store, tmp_path_factory.mktemp("logged") / "runtime.log", sink.url)
        try:
            yield process, sink
        finally:
            assert process.stop() == 0


def wait_until(done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def logger_counters(process: RuntimeProcess) -> dict[str, float]:
    """``isvc_logger_events_*`` samples from the inference port's /metrics, keyed by name and labels."""
    text = process.client.get("/metrics").text
    return {name: float(value) for name, value in
            re.findall(r"^(isvc_logger_events_\w+\{[^}]*\}) (\S+)$", text, re.MULTILINE)}


def dropped(process: RuntimeProcess) -> float:
    return sum(v for k, v in logger_counters(process).items() if k.startswith("isvc_logger_events_dropped"))


def test_the_operators_batcher_and_logger_flags_start_the_runtime_with_those_settings(
    logged_server: tuple[RuntimeProcess, CloudEventsSink]
) -> None:
    process, _ = logged_server
    assert "(batch size 8, delay 50 ms" in process.log()
    assert "payload logger: mode all, sink 127.0.0.1:" in process.log()


def test_v1_v2_and_explain_are_logged_as_paired_events_under_the_answers_request_id(
    logged_server: tuple[RuntimeProcess, CloudEventsSink]
) -> None:
    process, sink = logged_server
    mnist_request = MNIST_REQUEST.read_bytes()
    png = json.loads(mnist_request)["instances"][0]["data"]
    v2 = json.dumps({"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": [png]}]})
    calls = [
        ("/v1/models/torchserve:predict", mnist_request, {}),
        ("/v1/models/mnist:predict", mnist_request, {"x-request-id": "client-id-1"}),
        ("/v2/models/mnist/infer", v2.encode(), {}),
        ("/v1/models/mnist:explain", mnist_request, {}),
        ("/v2/models/nope/infer", v2.encode(), {}),  # an error answer is logged too
    ]
    before = len(sink.received)
    answers = [process.client.post(path, content=body, headers={"content-type": "application/json", **extra})
               for path, body, extra in calls]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 404], [a.text for a in answers]
    ids = [a.headers["x-request-id"] for a in answers]
    assert ids[1] == "client-id-1" and len(set(ids)) == len(ids)
    assert answers[2].json()["id"] == ids[2]  # the data plane's id is the logged one
    wait_until(lambda: len(sink.received) - before >= 9, 20, "9 events (no request event for the 404)")
    time.sleep(0.3)
    events = {(r.event.get_type(), r.event.get_id()): r for r in sink.received[before:]}
    assert len(events) == 9
    for (path, body, _), answer, event_id in zip(calls, answers, ids, strict=True):
        assert events[(RESPONSE, event_id)].body == answer.content, path
        assert events[(RESPONSE, event_id)].event.get_datacontenttype() == "application/json"
        assert events[(RESPONSE, event_id)].event.get_extension("endpoint") == "default"
        if answer.status_code == 200:
            assert events[(REQUEST, event_id)].body == body, path
    request = events[(REQUEST, ids[0])].event
    assert (request.get_source(), request.get_extension("inferenceservicename"),
            request.get_extension("namespace"), request.get_extension("component")) == (
        "torchserve-predictor-default", "torchserve", "kfserving-test", "predictor")
    assert logger_counters(process)[
        'isvc_logger_events_sent_total{isvc="torchserve",revision="torchserve-predictor-default-00001"}'] >= 9


def test_grpc_model_infer_is_logged_as_the_messages_framed_as_on_the_wire_under_the_calls_request_id(
    logged_server: tuple[RuntimeProcess, CloudEventsSink]
) -> None:
    process, sink = logged_server
    assert process.client.get("/").json() == {"live": True}  # GET / in the declared protocol (grpc-v2)
    png = base64.b64decode(json.loads(MNIST_REQUEST.read_bytes())["instances"][0]["data"])
    request = pb.ModelInferRequest(model_name="torchserve")
    request.inputs.add(name="input-0", datatype="BYTES", shape=[1]).contents.bytes_contents.append(png)
    before = len(sink.received)
    with grpc.insecure_channel(f"127.0.0.1:{process.grpc_port}") as channel:  # type: ignore[attr-defined]
        stub = GRPCInferenceServiceStub(channel)
        answer, call = stub.ModelInfer.with_call(request, metadata=(("x-request-id", "grpc-id-1"),))
        generated = dict(stub.ModelInfer.with_call(request)[1].trailing_metadata())["x-request-id"]
        assert stub.ServerLive(pb.ServerLiveRequest()).live  # not an inference: not logged
        with pytest.raises(grpc.RpcError) as malformed:
            infer = channel.unary_unary(f"/{SERVICE_NAME}/ModelInfer")
            infer(b"\xff\xff", metadata=(("x-request-id", "bad-1"),))
    assert list(answer.outputs[0].contents.int64_contents) == [2]
    assert dict(call.trailing_metadata())["x-request-id"] == "grpc-id-1" != generated
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(malformed.value.trailing_metadata())["x-request-id"] == "bad-1"
    wait_until(lambda: len(sink.received) - before >= 5, 20, "5 events (none for a failed answer)")
    time.sleep(0.3)
    events = {(r.event.get_type(), r.event.get_id()): r for r in sink.received[before:]}
    assert set(events) == {(REQUEST, "grpc-id-1"), (RESPONSE, "grpc-id-1"), (REQUEST, generated),
                           (RESPONSE, generated), (REQUEST, "bad-1")}
    assert events[(REQUEST, "grpc-id-1")].body == framed(request.SerializeToString())
    assert events[(RESPONSE, "grpc-id-1")].body == framed(answer.SerializeToString())
    assert events[(REQUEST, "bad-1")].body == framed(b"\xff\xff")
    assert {r.event.get_datacontenttype() for r in events.values()} == {GRPC_CONTENT_TYPE}
    assert events[(REQUEST, "grpc-id-1")].event.get_extension("inferenceservicename") == "torchserve"


@pytest.mark.parametrize("sink_kind", ["refused", "hanging"])
def test_a_failing_sink_costs_no_answer_and_its_events_are_counted_as_dropped(
    store: Path, tmp_path: Path, sink_kind: str
) -> None:
    with cloudevents_sink() as sink, refusing_port() as refusing:
        if sink_kind == "hanging":
            sink.answer = lambda _number: None  # reads the event, never answers
        url = sink.url if sink_kind == "hanging" else f"http://127.0.0.1:{refusing}/events"
        process = start(store, tmp_path / "runtime.log", url)
        try:
            body = MNIST_REQUEST.read_bytes()
            started = time.monotonic()
            answers = [process.client.post("/v1/models/mnist:predict", content=body) for _ in range(20)]
            elapsed = time.monotonic() - started
            assert [(a.status_code, a.json()) for a in answers] == [(200, {"predictions": [2]})] * 20
            assert elapsed < 15, elapsed  # nothing waits for the sink (a hanging send takes 5 s per try)
            # refused: each event fails at once, after its retries; hanging: after 4 timed-out tries (~21 s)
            wait_until(lambda: dropped(process) > 0, 60, f"the {sink_kind} sink's drops on /metrics")
            reason = "connection" if sink_kind == "refused" else "timeout"
            counters = logger_counters(process)
            assert any(f'reason="{reason}"' in k and v > 0 for k, v in counters.items()), counters
        finally:
            assert process.stop() == 0


@pytest.mark.parametrize("flags", [
    ("--logger-url", "ftp://sink/events"),
    ("--logger-url", "http://user:secret@sink/events"),
    ("--logger-mode", "everything"),
    ("--response-timeout", "0"),
])
def test_a_bad_logger_or_batcher_flag_exits_with_status_2_naming_it(tmp_path: Path, flags: tuple[str, ...]
                                                                      ) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "isvc_runtime", "--model-store", str(tmp_path), *flags],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert flags[0] in done.stderr
