"""Model kinds, handler kinds and archive formats, served from the seed layout by one real server."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from runtime_support import (
    ASSETS,
    RuntimeProcess,
    asset_archive,
    build_archive,
    quadrant_png,
    quadrant_tensor,
    serving,
)

CONFIG = """\
# the seed's keys, plus one this runtime does not know
inference_address=http://0.0.0.0:8085
management_address=http://0.0.0.0:8081
load_models=all
models={"batcher": {"1.0": {"batchSize": 8, "maxBatchDelay": 300, "responseTimeout": 60}}}
service_envelope=kserve
some_future_key=1
"""


# The archive's own model-config.yaml declares its v2 tensors (its handler, base_handler, does not).
SCRIPT_MODEL_CONFIG = """\
metadata:
  inputs: [{name: x, datatype: FP32, shape: [-1, 1, 8, 8]}]
  outputs: [{name: output-0, datatype: FP32, shape: [-1, 4]}]
"""


SAME_NAMED_HANDLER = """
def handle(data, context):
    if data is None:
        return None
    for index, row in enumerate(data):
        if row["data"] == "reject":
            context.set_response_status(422, "LETTER refuses this row", index)
    return ["LETTER:" + row["data"] for row in data]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, weights: dict[str, Path]) -> Iterator[RuntimeProcess]:
    root = tmp_path_factory.mktemp("store")
    store = root / "model-store"
    asset_archive(store, "quadrant", "quadrant_handler.py", "quadrant_net.py", weights["quadrant"])
    asset_archive(
        store, "quadrant_ts", "ts_quadrant_handler.py", "quadrant_net.py", weights["quadrant"],
        archive_format="zip-store",
    )
    build_archive(
        store,
        "labels",
        handler="image_classifier",
        model_file=ASSETS / "quadrant_net.py",
        serialized_file=weights["quadrant"],
        extra_files=[ASSETS / "index_to_name.json"],
        archive_format="tgz",
    )
    (root / "script-config.yaml").write_text(SCRIPT_MODEL_CONFIG)
    build_archive(
        store,
        "script",
        handler="base_handler",
        serialized_file=weights["quadrant_script"],
        archive_format="no-archive",
        config_file=root / "script-config.yaml",
    )
    build_archive(store, "exported", handler="base_handler", serialized_file=weights["quadrant_export"])
    asset_archive(store, "batcher", "batch_report_handler.py", "scale_sum.py", weights["scale_sum"])
    build_archive(store, "upper", handler=ASSETS / "function_handler.py")
    for letter in "ab":  # two archives whose handler modules share one file name
        source = root / f"handlers_{letter}" / "handler.py"
        source.parent.mkdir()
        source.write_text(SAME_NAMED_HANDLER.replace("LETTER", letter.upper()))
        build_archive(store, f"same_{letter}", handler=source)
    (root / "config").mkdir()
    (root / "config" / "config.properties").write_text(CONFIG)
    yield from serving(RuntimeProcess(root, root / "runtime.log"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_every_archive_format_and_model_kind_loads(server: RuntimeProcess) -> None:
    models = server.client.get("/v1/models").json()["models"]
    assert sorted(models) == [
        "batcher",
        "exported",
        "labels",
        "quadrant",
        "quadrant_ts",
        "same_a",
        "same_b",
        "script",
        "upper",
    ]
    for name in models:
        assert server.client.get(f"/v2/models/{name}/ready").json() == {"name": name, "ready": True}


def test_unknown_config_key_is_logged_once(server: RuntimeProcess) -> None:
    assert server.log().count("unknown key 'some_future_key'") == 1


@pytest.mark.parametrize("quadrant", [0, 1, 2, 3])
def test_eager_model_with_image_classifier_subclass_answers_each_quadrant(
    server: RuntimeProcess, quadrant: int
) -> None:
    body = {"instances": [{"data": _b64(quadrant_png(quadrant))}]}
    response = server.client.post("/v1/models/quadrant:predict", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [quadrant]}


def test_handler_subclassing_torchserve_ts_package_runs_unmodified(server: RuntimeProcess) -> None:
    """ts's BaseHandler.handle records HandlerTime through context.metrics.add_time and the handler
    adds a counter: both must work for these answers to come back."""
    instances = [{"data": _b64(quadrant_png(q))} for q in (3, 1, 0, 2)]
    response = server.client.post("/v1/models/quadrant_ts:predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [3, 1, 0, 2]}
    native = server.client.post("/predictions/quadrant_ts", content=quadrant_png(1))
    assert native.status_code == 200 and native.json() == 1


def test_what_handlers_record_through_context_metrics_is_on_the_metrics_endpoint(
    server: RuntimeProcess,
) -> None:
    """TorchServe's prometheus mode: the handler's counter and ts's HandlerTime, by ModelName and Level."""
    instances = [{"data": _b64(quadrant_png(q))} for q in (0, 1, 2)]
    before = _handler_counter(server)
    assert (
        server.client.post("/v1/models/quadrant_ts:predict", json={"instances": instances}).status_code == 200
    )
    assert _handler_counter(server) == before + 3
    text = server.client.get("/metrics").text
    assert "# TYPE HandlerTime gauge" in text
    assert 'HandlerTime{ModelName="quadrant_ts",Level="Model",Hostname="' in text


def _handler_counter(server: RuntimeProcess) -> float:
    prefix = 'QuadrantAnswers{ModelName="quadrant_ts",Level="Model",Hostname="'
    lines = [line for line in server.client.get("/metrics").text.splitlines() if line.startswith(prefix)]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


def test_builtin_image_classifier_maps_classes_to_names_from_index_to_name(server: RuntimeProcess) -> None:
    png = quadrant_png(2, mode="RGB", size=64)
    response = server.client.post("/v1/models/labels:predict", json={"instances": [{"data": _b64(png)}]})
    assert response.status_code == 200, response.text
    (answer,) = response.json()["predictions"]
    assert set(answer) == {"top-left", "top-right", "bottom-left", "bottom-right"}
    assert max(answer, key=answer.get) == "bottom-left"
    assert abs(sum(answer.values()) - 1.0) < 1e-4


@pytest.mark.parametrize("model", ["script", "exported"])
def test_torchscript_and_torch_export_models_take_v2_fp32_tensors(server: RuntimeProcess, model: str) -> None:
    tensors = [quadrant_tensor(q) for q in (1, 3)]
    flat = [v for t in tensors for plane in t for row in plane for v in row]
    body = {"id": "req-7", "inputs": [{"name": "x", "shape": [2, 1, 8, 8], "datatype": "FP32", "data": flat}]}
    response = server.client.post(f"/v2/models/{model}/infer", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["model_name"] == model and result["id"] == "req-7" and result["model_version"] == "1.0"
    (output,) = result["outputs"]
    assert output["shape"] == [2, 4] and output["datatype"] in ("FP32", "FP64")
    scores = [output["data"][0:4], output["data"][4:8]]
    assert [row.index(max(row)) for row in scores] == [1, 3]


def test_v2_metadata_is_what_the_handler_or_the_archive_declares_never_past_traffic(
    server: RuntimeProcess,
) -> None:
    declared = {
        "script": (  # the archive's model-config.yaml
            [{"name": "x", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
            [{"name": "output-0", "datatype": "FP32", "shape": [-1, 4]}],
        ),
        "labels": ([{"name": "input-0", "datatype": "BYTES", "shape": [-1]}], []),  # the handler's
        "exported": ([], []),  # nothing declared: unknown
    }
    body = {"inputs": [{"name": "other", "shape": [1, 1, 8, 8], "datatype": "FP64", "data": [0.5] * 64}]}
    for model, (inputs, outputs) in declared.items():
        for _ in range(2):  # before and after an inference with other tensors
            metadata = server.client.get(f"/v2/models/{model}").json()
            assert metadata["name"] == model and metadata["versions"] == ["1.0"]
            assert metadata["platform"] == "pytorch" and metadata["ready"] is True
            assert (metadata["inputs"], metadata["outputs"]) == (inputs, outputs), model
            if model != "labels":
                assert server.client.post(f"/v2/models/{model}/infer", json=body).status_code == 200


def test_module_level_handle_function_serves_bytes_inputs(server: RuntimeProcess) -> None:
    body = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["abc", "xyz"]}]}
    response = server.client.post("/v2/models/upper/infer", json=body)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["datatype"] == "BYTES" and output["shape"] == [2]
    assert [json.loads(item) for item in output["data"]] == [
        {"upper": "ABC", "model": "upper"},
        {"upper": "XYZ", "model": "upper"},
    ]


def test_concurrent_distinct_requests_are_batched_and_each_gets_its_own_answer(
    server: RuntimeProcess,
) -> None:
    """32 requests at once, value v each: the model answers 2 * (v + v) = 4v, in batches of up to 8."""

    def ask(value: int) -> tuple[int, dict]:
        protocol = value % 3
        if protocol == 0:
            response = server.client.post("/v1/models/batcher:predict", json={"instances": [[value, value]]})
            return response.status_code, response.json()["predictions"][0]
        if protocol == 1:
            body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "INT64", "data": [value, value]}]}
            response = server.client.post("/v2/models/batcher/infer", json=body)
            return response.status_code, json.loads(response.json()["outputs"][0]["data"][0])
        response = server.client.post("/predictions/batcher", json=[value, value])
        return response.status_code, response.json()

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(ask, range(1, 33)))
    assert [status for status, _ in results] == [200] * 32
    assert [answer["value"] for _, answer in results] == [4.0 * v for v in range(1, 33)]
    assert all(answer["batch_rows"] <= 8 for _, answer in results)
    assert max(answer["batch_rows"] for _, answer in results) > 1, "no two requests shared a batch"


def test_a_poisoned_request_fails_alone_while_its_batch_mates_succeed(server: RuntimeProcess) -> None:
    def ask(value: int) -> tuple[int, dict]:
        response = server.client.post("/v1/models/batcher:predict", json={"instances": [[value, 0]]})
        return response.status_code, response.json()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(ask, [1, 2, 3, 666, 5, 6, 7, 8]))
    statuses = [status for status, _ in results]
    assert statuses == [200, 200, 200, 500, 200, 200, 200, 200]
    assert "poisoned row" in results[3][1]["error"] and "Traceback" not in results[3][1]["error"]
    assert [body["predictions"][0]["value"] for status, body in results if status == 200] == [
        2.0 * v for v in (1, 2, 3, 5, 6, 7, 8)
    ]


def test_requests_of_different_shapes_in_one_batch_are_answered_separately(server: RuntimeProcess) -> None:
    def ask(width: int) -> tuple[int, dict]:
        response = server.client.post("/v1/models/batcher:predict", json={"instances": [[1] * width]})
        return response.status_code, response.json()

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(ask, [2, 3, 4, 5]))
    assert [(status, body["predictions"][0]["value"]) for status, body in results] == [
        (200, 4.0),
        (200, 6.0),
        (200, 8.0),
        (200, 10.0),
    ]


def test_store_can_be_a_directory_of_archives_or_one_unpacked_archive(
    tmp_path: Path, server: RuntimeProcess, weights: dict[str, Path]
) -> None:
    flat = tmp_path / "flat"
    asset_archive(flat, "quadrant", "quadrant_handler.py", "quadrant_net.py", weights["quadrant"])
    unpacked = build_archive(
        tmp_path / "one",
        "script",
        handler="base_handler",
        serialized_file=weights["quadrant_script"],
        archive_format="no-archive",
    )
    (flat / "copy_of_quadrant.mar").write_bytes((flat / "quadrant.mar").read_bytes())
    for store, expected in ((flat, ["copy_of_quadrant", "quadrant"]), (unpacked, ["script"])):
        with RuntimeProcess(store, tmp_path / f"{store.name}.log") as process:
            process.wait_ready()
            assert process.client.get("/v1/models").json()["models"] == expected


def test_versioned_v2_paths_answer_for_the_models_version_only(server: RuntimeProcess) -> None:
    assert server.client.get("/v2/models/script/versions/1.0/ready").status_code == 200
    body = {"inputs": [{"name": "x", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]}
    assert server.client.post("/v2/models/script/versions/1.0/infer", json=body).status_code == 200
    missing = server.client.post("/v2/models/script/versions/9.9/infer", json=body)
    assert missing.status_code == 404 and "9.9" in missing.json()["error"]


def test_archives_with_same_named_handler_files_each_run_their_own(server: RuntimeProcess) -> None:
    for letter in "ab":
        response = server.client.post(f"/v1/models/same_{letter}:predict", json={"instances": ["x"]})
        assert response.json() == {"predictions": [f"{letter.upper()}:x"]}


def test_a_status_set_by_the_handler_through_the_context_is_the_answer(server: RuntimeProcess) -> None:
    response = server.client.post("/v1/models/same_b:predict", json={"instances": ["reject"]})
    assert response.status_code == 422 and response.json() == {"error": "B refuses this row"}


def test_sequential_requests_to_a_batching_model_each_answer_after_the_delay(server: RuntimeProcess) -> None:
    for value in range(5):
        response = server.client.post("/v1/models/batcher:predict", json={"instances": [[value]]}, timeout=5)
        assert response.status_code == 200
        assert response.json() == {"predictions": [{"value": 2.0 * value, "batch_rows": 1}]}
