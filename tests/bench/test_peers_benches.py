"""The peers benches' pure parts (peers, grpc_bench, serving_grpc, suite) and the shared helpers they use."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import grpc_bench
import paired
import peers
import serving_grpc
import serving_load
import serving_procs
import suite


def _point(rps: float, p99_ms: float = 10.0, *, errors: int = 0, cpu_s: float = 0.0) -> serving_load.Point:
    return serving_load.Point(
        requests=int(rps * 5),
        seconds=5.0,
        rps=rps,
        p50_ms=p99_ms / 2,
        p99_ms=p99_ms,
        errors=errors,
        status_errors=errors,
        mean_ms=p99_ms / 3,
        client_cpu_s=cpu_s,
    )


def test_a_ratio_between_setups_skips_rounds_where_either_is_missing() -> None:
    rounds = [
        {"a": _point(200), "b": _point(100)},
        {"a": _point(300)},  # b was left out of this round
        {"a": _point(330), "b": _point(110)},
    ]
    assert peers.ratio(rounds, "rps", "a", "b")["ratio"] == 2.5  # median of 2.0 and 3.0


def test_the_best_candidate_is_the_fastest_without_errors() -> None:
    measured = {
        32: [
            {"k1": _point(100), "k2": _point(300, errors=3), "k3": _point(150)},
            {"k1": _point(120), "k2": _point(310), "k3": _point(140)},
        ]
    }
    assert peers.best(measured, ["k1", "k2", "k3", "k4"], 32) == "k3"  # k2 erred, k4 never ran
    assert peers.left_out(measured, ["k1", "k4"]) == ["k4"]


def test_memory_rows_give_processes_then_pss_idle_first() -> None:
    memory = {"ours": {"c32": 610.4, "idle": 600.0, "processes": 1, "c1": 605.0}}
    rows = peers.memory_rows(memory, {"ours": "ours default", "kserve": "KServe"})
    assert rows[0] == ["setup", "processes", "PSS MiB idle", "PSS MiB c1", "PSS MiB c32"]
    assert rows[1] == ["ours default", "1", "600", "605", "610"]
    assert rows[2] == ["KServe", "n/a", "n/a", "n/a", "n/a"]


def test_verdicts_compare_each_ratio_with_its_bound() -> None:
    targets = [("a", "A", ">=", 2.0), ("b", "B", "<=", 0.5), ("c", "C", ">=", 1.0), ("d", "D", "<=", 1.0)]
    lines = paired.verdicts({"a": 2.5, "b": 0.7, "c": None, "d": True}, targets)
    assert lines == [
        "A >= 2: 2.5: met",
        "B <= 0.5: 0.7: NOT met",
        "C >= 1: not measured",
        "D <= 1: not measured",
    ]


def test_quick_replaces_the_schedule() -> None:
    parser = paired.arguments("", rounds=4, seconds=5.0, warmup=3.0, quick=(1, 2.0, 1.0), start_timeout=60.0)
    args = paired.parse(parser, ["--quick"])
    assert paired.Schedule.of(args) == paired.Schedule(1, 2.0, 1.0)
    assert args.start_timeout == 60.0
    assert paired.Schedule.of(paired.parse(parser, [])) == paired.Schedule(4, 5.0, 3.0)


def test_sides_that_share_a_server_start_it_once(tmp_path: Path) -> None:
    one = serving_procs.Server("one", ["true"], 1, tmp_path / "one.log", grpc_port=2)
    two = serving_procs.Server("two", ["true"], 3, tmp_path / "two.log")
    body = tmp_path / "body"
    sides = {
        "one_rest": paired.Side(one, "/v2/models/m/infer", body, bool),
        "one_grpc": paired.Side(one, serving_grpc.METHOD, body, bool, grpc=True),
        "two_rest": paired.Side(two, "/v2/models/m/infer", body, bool),
    }
    servers = paired._servers(sides)
    assert len(servers) == 2 and servers[0] is one and servers[1] is two


def test_a_generator_line_with_its_own_cpu_time_gives_its_ceiling() -> None:
    raw = {
        "requests": 5000, "duration_us": 5_000_000, "p50_us": 900, "p90_us": 1500, "p99_us": 3000,
        "max_us": 9000, "mean_us": 1000.0, "status_errors": 0, "connect_errors": 0, "read_errors": 0,
        "write_errors": 0, "timeouts": 0, "cpu_us": 250_000,
    }  # fmt: skip
    point = serving_load.parse_wrk_output(serving_load.MARKER + json.dumps(raw))
    assert point.client_cpu_s == 0.25
    assert serving_load.generator_ceiling(point) == pytest.approx(20_000)  # 5000 requests in 0.25 CPU-s
    assert serving_load.generator_ceiling(_point(100)) is None  # not measured


def test_the_grpc_request_carries_the_images_and_answers_decode_typed_or_raw() -> None:
    from open_inference.grpc import protocol as pb

    request = pb.ModelInferRequest.FromString(serving_grpc.infer_request("mnist", [b"\x89PNG-one"]))
    assert request.model_name == "mnist"
    tensor = request.inputs[0]
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("input-0", "BYTES", [1])
    assert list(tensor.contents.bytes_contents) == [b"\x89PNG-one"]
    typed = pb.ModelInferResponse(
        outputs=[
            pb.ModelInferResponse.InferOutputTensor(
                name="output-0",
                datatype="INT64",
                shape=[1],
                contents=pb.InferTensorContents(int64_contents=[2]),
            )
        ]
    )
    raw = pb.ModelInferResponse(
        outputs=[pb.ModelInferResponse.InferOutputTensor(name="output-0", datatype="INT32", shape=[2])],
        raw_output_contents=[(2).to_bytes(4, "little") + (7).to_bytes(4, "little")],
    )
    assert serving_grpc.answer_classes(typed.SerializeToString()) == [2]
    assert serving_grpc.answer_classes(raw.SerializeToString()) == [2, 7]
    assert serving_grpc.answer_is([2])(typed.SerializeToString())
    assert not serving_grpc.answer_is([2])(b"not a message")


def test_kserve_grpc_candidates_keep_the_default_first() -> None:
    assert grpc_bench.kserve_candidates(["default", "1", "2"]) == {
        "kserve_default": None,
        "kserve_omp1": 1,
        "kserve_omp2": 2,
    }


def test_grpc_ratios_compare_ours_with_kserves_grpc_and_state_the_generators_ceilings() -> None:
    def round_(ours_tuned: float, kserve: float) -> paired.Round:
        return {
            "ours_default_grpc": _point(ours_tuned / 2, 20.0, cpu_s=0.5),
            "ours_tuned_grpc": _point(ours_tuned, 10.0, cpu_s=1.0),
            "ours_default_rest": _point(ours_tuned / 3, cpu_s=0.2),
            "ours_tuned_rest": _point(ours_tuned / 2, cpu_s=0.25),
            "kserve_default_grpc": _point(kserve, 40.0, cpu_s=0.1),
            "kserve_omp1_grpc": _point(kserve * 1.25, 30.0, cpu_s=0.1),
            "kserve_default_rest": _point(kserve, cpu_s=0.1),
        }

    measured = {1: [round_(300, 100)], 32: [round_(3000, 1000), round_(2000, 1000)]}
    ratios = grpc_bench.key_ratios(measured, "kserve_omp1", list(measured[32][0]))
    assert ratios["grpc_c32_ratio"] == 2.0  # per round 2.4 and 1.6, against KServe with OMP_NUM_THREADS=1
    assert ratios["grpc_c32_p99_ratio"] == pytest.approx(0.333)
    assert ratios["grpc_default_c32_ratio"] == 1.25  # (1500 / 1000 and 1000 / 1000)
    assert ratios["grpc_kserve_best"] == "kserve_omp1"
    assert ratios["max_rps"] == 3000
    # ours tuned at 3000 req/s spent 1 CPU-s on 15000 calls: 15000 calls per core-second; the median
    # over every gRPC point, and the share of a core at the busiest point (1 CPU-s in 5 s)
    assert ratios["grpcload_max_core_share"] == 0.2
    assert (
        ratios["grpcload_ceiling_rps"]
        == grpc_bench.generator_load(measured, [s for s in measured[32][0] if s.endswith("_grpc")])[
            "ceiling_rps"
        ]
    )


def test_a_grpc_run_against_a_baseline_can_pair_one_setup_with_other_flags() -> None:
    args = grpc_bench.parse_args(
        ["--baseline", ".", "--setups", "tuned", "--candidate-flags=--processes 2 --torch-threads 1"]
    )
    assert args.setups == ["tuned"]
    assert args.candidate_flags == ["--processes", "2", "--torch-threads", "1"]
    rounds = [
        {"this_tuned_grpc": _point(1200, 60.0), "baseline_tuned_grpc": _point(1000, 50.0)},
        {"this_tuned_grpc": _point(900, 90.0), "baseline_tuned_grpc": _point(1000, 50.0)},
    ]
    ratios = grpc_bench.baseline_ratios({32: rounds}, args.setups)
    assert ratios == {
        "tuned_c32_ratio": pytest.approx(1.05),  # the median of 1.2 and 0.9
        "tuned_c32_p50_ratio": pytest.approx(1.5),
        "tuned_c32_p99_ratio": pytest.approx(1.5),
    }


def test_the_suite_keeps_each_benchs_last_json_object() -> None:
    out = ["table", '{"not": "last"}', "", '{"kserve_default_c32_ratio": 1.8}', "wrote results.md", "{broken"]
    assert suite.last_json(out) == {"kserve_default_c32_ratio": 1.8}
    assert suite.last_json(["no json"]) is None
    assert json.loads(suite.summary_line("kserve", 301.4, 0, {"r": 1.8})) == {
        "bench": "kserve",
        "seconds": 301,
        "r": 1.8,
    }
    assert json.loads(suite.summary_line("grpc", 5, 1, None))["failed"] == 1
    assert set(suite.PEERS) <= set(suite.BENCHES)
    assert all((suite.BENCH_DIR / script).is_file() for script in suite.BENCHES.values())


def test_each_benchs_section_keeps_its_markers_and_takes_its_goals_from_the_goals_file() -> None:
    import throughput_bench

    report = throughput_bench.REPORT
    assert report.begin == (
        "<!-- throughput-bench:begin (written by bench/throughput_bench.py; replaced every run) -->"
    )  # as bench/results.md has it, so a run replaces its section
    assert report.end == "<!-- throughput-bench:end -->"
    assert report.title.endswith("(`bench/throughput_bench.py`)")
    assert ("throughput", "throughput ratio", ">=", 2.0) in report.targets
    goals = json.loads(paired.GOALS.read_text())
    for bench in ("kserve_bench", "grpc_bench", "resnet_bench"):
        keys = [goal[0] for goal in goals[bench]["goals"]]
        assert keys and all(comparison in (">=", "<=") for _, _, comparison, _ in goals[bench]["goals"])
    assert "kserve_default_c32_ratio" in json.dumps(goals["kserve_bench"])
    assert "grpc_c32_ratio" in json.dumps(goals["grpc_bench"])


def test_a_partial_resnet_run_compares_ours_with_the_baseline_checkout_and_the_candidate_with_tuned() -> None:
    import resnet_bench

    rounds = [
        {"ours_default": _point(30), "baseline_default": _point(15, 20.0), "ours_tuned": _point(40)},
        {"ours_default": _point(33), "baseline_default": _point(15, 20.0), "ours_tuned": _point(40)},
    ]
    ratios = resnet_bench.baseline_ratios({32: rounds})
    assert ratios["ours_default_vs_baseline_default_c32"] == pytest.approx(2.1)
    assert ratios["ours_default_vs_baseline_default_c32_p99"] == pytest.approx(0.5)
    assert not any(key.startswith(("ours_tuned", "ours_candidate")) for key in ratios)  # no reference ran


def test_a_resnet_round_ends_only_once_the_server_computed_what_the_load_left_behind(tmp_path: Path) -> None:
    import resnet_bench

    # a stand-in server: 1.5 s of CPU after the load (as if answering abandoned requests), then idle
    busy = (
        "import time\nend = time.process_time() + 1.5\nwhile time.process_time() < end: pass\ntime.sleep(60)"
    )
    server = serving_procs.Server("busy", [sys.executable, "-c", busy], 1, tmp_path / "busy.log")
    server.start()
    try:
        waited = resnet_bench.wait_until_idle(server)
        assert 1.0 <= waited < resnet_bench.DRAIN_MOST_S
        assert resnet_bench.wait_until_idle(server) < 1.0  # idle now: one window
        assert resnet_bench.wait_until_idle(server, most_s=0.0) == pytest.approx(0.0, abs=0.05)
    finally:
        server.stop()
