"""The runtime's pure parts, tested directly: config.properties, store selection, v2 codec, batching."""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from isvc_runtime.batching import Batcher, Pending, take_batch
from isvc_runtime.codecs import v1, v2
from isvc_runtime.config import (
    ModelSettings,
    apply_env_overrides,
    build_config,
    model_settings,
    parse_address,
    parse_properties,
)
from isvc_runtime.errors import ConfigError, InputError
from isvc_runtime.inference import answers_to_outputs, tensor_metadata, to_rows
from isvc_runtime.model_store import discover, select_sources
from isvc_runtime.registry import unique_names

KSERVE_SAMPLE = """\
inference_address=http://0.0.0.0:8085
management_address=http://0.0.0.0:8085
# a comment
! another comment
number_of_netty_threads=4
enable_envvars_config=true
model_store=/mnt/models/model-store
model_snapshot={"name":"startup.cfg","modelCount":1,"models":{"mnist":{"1.0":{"defaultVersion":true,\\
"marName":"mnist.mar","minWorkers":1,"maxWorkers":5,"batchSize":4,"maxBatchDelay":10,"responseTimeout":120}}}}
"""


def test_kserve_sample_config_parses_with_continuation_lines() -> None:
    props = parse_properties(KSERVE_SAMPLE)
    assert props["inference_address"] == "http://0.0.0.0:8085"
    assert "# a comment" not in props and "!" not in "".join(props)
    config = build_config(props)
    assert (config.host, config.port) == ("0.0.0.0", 8085)
    assert config.snapshot and [e.mar_name for e in config.model_entries] == ["mnist.mar"]
    assert model_settings("mnist", config) == ModelSettings(
        batch_size=4, max_batch_delay_ms=10, workers=1, response_timeout_s=120
    )


def test_flags_override_config_and_archive_defaults() -> None:
    config = build_config({"models": '{"m": {"1.0": {"batchSize": 4, "maxBatchDelay": 7}}}'})
    archive_yaml = {"batchSize": 2, "responseTimeout": 9}
    assert model_settings("m", config, archive_defaults=archive_yaml).batch_size == 4
    assert model_settings("m", config, archive_defaults=archive_yaml).response_timeout_s == 9
    overridden = model_settings("m", config, archive_defaults=archive_yaml, response_timeout_s=2)
    assert overridden.response_timeout_s == 2
    assert model_settings("m", config, batch_size=16, max_batch_delay_ms=0).batch_size == 16
    assert model_settings("m", config, batch_size=16, max_batch_delay_ms=0).max_batch_delay_ms == 0
    assert model_settings("other", config) == ModelSettings()


def test_ts_environment_overrides_apply_only_when_enabled() -> None:
    env = {"TS_MAX_REQUEST_SIZE": "100", "TS_INFERENCE_ADDRESS": "http://127.0.0.1:9000", "PATH": "/bin"}
    enabled = apply_env_overrides({"enable_envvars_config": "true", "max_request_size": "5"}, env)
    assert enabled["max_request_size"] == "100" and build_config(enabled).port == 9000
    disabled = apply_env_overrides({"max_request_size": "5"}, env)
    assert disabled["max_request_size"] == "5"


@pytest.mark.parametrize(
    ("props", "key"),
    [
        ({"max_request_size": "1e6"}, "max_request_size"),
        ({"inference_address": "ftp://host:1"}, "inference_address"),
        ({"models": '{"m": {"1.0": {"maxBatchDelay": -1}}}'}, "maxBatchDelay"),
        ({"models": '{"m": {"1.0": {"batchSize": 0}}}'}, "batchSize"),
        ({"models": "[]"}, "models"),
        ({"service_envelope": "soap"}, "service_envelope"),
        ({"limit_max_image_pixels": "perhaps"}, "limit_max_image_pixels"),
    ],
)
def test_malformed_values_raise_naming_the_key(props: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_config(props)


def test_address_without_scheme_or_port() -> None:
    assert parse_address("inference_address", "127.0.0.1:9") == ("127.0.0.1", 9)
    assert parse_address("inference_address", "http://localhost") == ("localhost", 80)


def _touch(store: Path, *names: str) -> None:
    store.mkdir(parents=True, exist_ok=True)
    for name in names:
        (store / name).write_bytes(b"")


def test_load_models_forms_select_archives(tmp_path: Path) -> None:
    _touch(tmp_path, "a.mar", "b.mar", "c.tar.gz", "notes.txt")
    everything = select_sources(tmp_path, build_config({}))
    assert [s.path.name for s in everything] == ["a.mar", "b.mar", "c.tar.gz"]
    listed = select_sources(tmp_path, build_config({"load_models": "b.mar, renamed=a.mar, c"}))
    assert [(s.name, s.path.name) for s in listed] == [
        (None, "b.mar"),
        ("renamed", "a.mar"),
        (None, "c.tar.gz"),
    ]
    with pytest.raises(ConfigError, match="outside the model store"):
        select_sources(tmp_path, build_config({"load_models": "../../etc/passwd"}))


def test_torchserve_store_layout_falls_back_from_the_in_cluster_model_store_path(tmp_path: Path) -> None:
    _touch(tmp_path / "model-store", "mnist.mar")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.properties").write_text(KSERVE_SAMPLE)
    config, sources = discover(tmp_path, env={})
    assert config.port == 8085
    assert [(s.name, s.path) for s in sources] == [("mnist", tmp_path / "model-store" / "mnist.mar")]


def test_v1_wraps_plain_instances_as_data_rows() -> None:
    assert v1.decode_request({"instances": [{"data": "x"}, [1, 2], "s"]}) == [
        {"data": "x"},
        {"data": [1, 2]},
        {"data": "s"},
    ]


def test_v2_numeric_input_becomes_one_row_per_batch_entry_without_copying_to_lists() -> None:
    request = v2.decode_request(
        {
            "id": "r1",
            "inputs": [{"name": "x", "shape": [2, 3], "datatype": "INT32", "data": [1, 2, 3, 4, 5, 6]}],
        }
    )
    (tensor,) = request.inputs
    assert request.id == "r1" and (tensor.name, tensor.datatype, tensor.shape) == ("x", "INT32", [2, 3])
    rows = to_rows(request)
    assert len(rows) == 2 and isinstance(rows[0]["data"], np.ndarray)
    assert rows[1]["data"].tolist() == [4, 5, 6] and rows[1]["data"].dtype == np.int32


def test_v2_several_inputs_share_rows_by_name() -> None:
    rows = to_rows(
        v2.decode_request(
            {
                "inputs": [
                    {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
                    {"name": "flag", "shape": [2, 1], "datatype": "BOOL", "data": [True, False]},
                ]
            }
        )
    )
    assert rows[0]["data"] == "a" and rows[0]["text"] == "a" and rows[1]["flag"].tolist() == [False]


@pytest.mark.parametrize(
    "tensor",
    [
        {"name": "x", "shape": [3], "datatype": "INT64", "data": [1, 2]},
        {"name": "x", "shape": [1], "datatype": "UINT8", "data": [1.5]},
        {"name": "x", "shape": [1], "datatype": "BOOL", "data": [2.0]},
        {"name": "x", "shape": [], "datatype": "FP32", "data": [1.0]},
        {"name": "x", "shape": [0], "datatype": "FP32", "data": []},
        {"name": "x", "shape": [1], "datatype": "FP32", "data": "1.0"},
        {"name": "x", "shape": [1], "datatype": {"FP32": 1}, "data": [1.0]},
    ],
)
def test_v2_rejects_ill_typed_or_ill_shaped_tensors(tensor: dict) -> None:
    with pytest.raises(InputError):
        to_rows(v2.decode_request({"inputs": [tensor]}))


def test_v2_inputs_of_different_row_counts_are_refused() -> None:
    request = v2.decode_request(
        {
            "inputs": [
                {"name": "a", "shape": [2], "datatype": "INT64", "data": [1, 2]},
                {"name": "b", "shape": [3], "datatype": "INT64", "data": [1, 2, 3]},
            ]
        }
    )
    with pytest.raises(InputError, match="rows"):
        to_rows(request)


def test_v2_response_encodes_tensors_flat_with_the_request_parameters() -> None:
    from isvc_runtime.inference import InferenceResponse

    response = InferenceResponse("m", "1.0", "id-1", answers_to_outputs([[1, 2], [3, 4]]), {"p": 1})
    body = v2.encode_response(response)
    assert body["model_name"] == "m" and body["id"] == "id-1" and body["parameters"] == {"p": 1}
    (output,) = body["outputs"]
    assert (
        output["shape"] == [2, 2]
        and output["datatype"] == "INT64"
        and output["data"].tolist() == [1, 2, 3, 4]
    )


def test_declared_tensor_metadata_is_checked_and_malformed_means_unknown() -> None:
    (tensor,) = tensor_metadata([{"name": "x", "datatype": "FP32", "shape": [-1, 1, 28, 28]}])
    assert (tensor.name, tensor.datatype, tensor.shape) == ("x", "FP32", (-1, 1, 28, 28))
    assert tensor_metadata([{"name": "x", "datatype": "FLOAT", "shape": [-1]}]) is None
    assert tensor_metadata("inputs") is None


def test_v2_outputs_stack_numbers_and_fall_back_to_json_bytes() -> None:
    (numeric,) = answers_to_outputs([[1, 2], [3, 4]])
    assert (
        numeric.shape == [2, 2] and numeric.datatype == "INT64" and numeric.data.tolist() == [[1, 2], [3, 4]]
    )
    (structured,) = answers_to_outputs([{"cat": 0.9}, "plain"])
    assert v2.encode_tensor(structured) == {
        "name": "output-0",
        "shape": [2],
        "datatype": "BYTES",
        "data": ['{"cat":0.9}', "plain"],
    }


def _pending(rows: int, *, exclusive: bool = False) -> Pending:
    return Pending([0] * rows, {}, "id", None, 0.0, exclusive)  # type: ignore[arg-type]


def test_take_batch_fills_up_to_max_rows_without_splitting_requests() -> None:
    queue = deque([_pending(3), _pending(4), _pending(2), _pending(1)])
    assert [len(p.rows) for p in take_batch(queue, 8)] == [3, 4]
    assert [len(p.rows) for p in take_batch(queue, 8)] == [2, 1]
    oversized = deque([_pending(20), _pending(1)])
    assert [len(p.rows) for p in take_batch(oversized, 8)] == [20]


def test_exclusive_requests_run_alone() -> None:
    queue = deque([_pending(1), _pending(1, exclusive=True), _pending(1)])
    assert len(take_batch(queue, 8)) == 1
    assert take_batch(queue, 8)[0].exclusive
    assert len(take_batch(queue, 8)) == 1


def test_batcher_merges_concurrent_requests_and_splits_answers_back() -> None:
    calls: list[list[int]] = []

    async def run_batch(batch: list[Pending]) -> None:
        calls.append([len(p.rows) for p in batch])
        for pending in batch:
            pending.future.set_result([row * 10 for row in pending.rows])

    async def scenario() -> list[list[int]]:
        batcher = Batcher(run_batch, max_rows=4, max_delay=0.05)
        futures = [batcher.submit([value], {}, str(value)) for value in range(6)]
        answers = await asyncio.gather(*futures)
        await batcher.stop()
        return answers

    assert asyncio.run(scenario()) == [[0], [10], [20], [30], [40], [50]]
    assert calls == [[1, 1, 1, 1], [1, 1]]


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_batched_image_decoding_gives_exactly_the_transforms_numbers(mode: str) -> None:
    import base64
    import io

    import torch
    from isvc_runtime.handlers.image_classifier import VisionHandler
    from PIL import Image
    from torchvision import transforms

    class Normalised(VisionHandler):
        image_processing = transforms.Compose(
            [
                transforms.ToTensor(),
                transforms.Normalize((0.2, 0.3, 0.4)[: len(mode)], (0.5, 0.6, 0.7)[: len(mode)]),
            ]
        )

    rng = np.random.default_rng(7)
    pngs = []
    for _ in range(5):
        shape = (12, 10) if mode == "L" else (12, 10, 3)
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    handler = Normalised()
    batched = handler.preprocess(
        [{"data": base64.b64encode(p).decode()} for p in pngs[:3]] + [{"body": p} for p in pngs[3:]]
    )
    expected = torch.stack([Normalised.image_processing(Image.open(io.BytesIO(p))) for p in pngs])
    assert batched.shape == expected.shape and torch.equal(batched, expected)


def test_archives_sharing_a_model_name_are_told_apart_by_file_name() -> None:
    candidates = [
        (None, "mnist", "mnist"),
        (None, "mnist", "mnist_copy"),
        ("canary", "mnist", "m2"),
        (None, None, "x"),
    ]
    assert unique_names(candidates) == ["mnist", "mnist_copy", "canary", "x"]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_batcher_answers_sequential_requests_that_each_wait_out_the_delay(loop: str) -> None:
    """One request at a time, so every batch ends by its timer (which an event loop may fire a clock
    tick early; uvloop, the server's loop, keeps a millisecond clock): none may be left waiting."""
    import uvloop

    async def run_batch(batch: list[Pending]) -> None:
        for pending in batch:
            pending.future.set_result(list(pending.rows))

    async def scenario() -> int:
        batcher = Batcher(run_batch, max_rows=8, max_delay=0.001)
        answered = 0
        for value in range(300):
            assert await asyncio.wait_for(batcher.submit([value], {}, "id"), 2) == [value]
            answered += 1
        await batcher.stop()
        return answered

    with asyncio.Runner(loop_factory=uvloop.new_event_loop if loop == "uvloop" else None) as runner:
        assert runner.run(scenario()) == 300
