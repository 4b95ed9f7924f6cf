"""The paired benchmarks' pure parts (paired, explain_bench, throughput_bench): ratios, order, sections."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import explain_bench
import paired
import serving_load
import serving_report


def test_the_ratio_is_the_median_of_per_round_ratios_not_the_ratio_of_medians() -> None:
    # The machine slows down in round 2: both sides slow together, the pair's ratio does not move.
    rounds = [
        {"ours": 5.0, "torchserve": 10.0},
        {"ours": 9.0, "torchserve": 18.0},
        {"ours": 6.0, "torchserve": 10.0},
    ]
    summary = paired.summary(rounds)
    assert summary["ratio"] == 0.5
    assert summary["ratio_min"] == 0.5
    assert summary["ratio_max"] == 0.6
    assert summary["ours_median"] == 6.0
    assert summary["ts_median"] == 10.0


def test_rounds_missing_a_side_are_left_out_and_none_means_not_measured() -> None:
    assert paired.summary([{"ours": 5.0}])["ratio"] is None
    summary = paired.summary([{"ours": 5.0}, {"ours": 4.0, "torchserve": 8.0}])
    assert summary["ratio"] == 0.5


def test_sides_alternate_which_goes_first() -> None:
    orders = [paired.round_order(i) for i in range(4)]
    assert orders[0] == ("ours", "torchserve") == orders[2]
    assert orders[1] == ("torchserve", "ours") == orders[3]


def test_overheads_are_p50_minus_the_compute_floor_at_concurrency_1() -> None:
    summaries = {
        1: {"ours_median": 5.0, "ts_median": 9.0, "ratio": 0.55, "ratio_min": 0.5, "ratio_max": 0.6},
        4: {"ours_median": None, "ts_median": None, "ratio": None, "ratio_min": None, "ratio_max": None},
    }
    header, c1, c4 = explain_bench.table_rows(summaries, floor_ms=4.0)
    row = dict(zip(header, c1, strict=True))
    assert row["TorchServe overhead ms"] == "5.00"
    assert row["our overhead ms"] == "1.00"
    assert row["ratio range"] == "0.500-0.600"
    assert c4[0] == "c4" and set(c4[1:]) == {"n/a"}


def test_the_section_is_replaced_in_place_and_the_rest_of_the_document_is_kept() -> None:
    document = "# Benchmark results\n\nserving text\n"
    begin, end = explain_bench.REPORT.begin, explain_bench.REPORT.end
    once = serving_report.replace_section(document, "first", begin, end)
    twice = serving_report.replace_section(once + "\ntrailing\n", "second", begin, end)
    assert "serving text" in twice and "trailing" in twice
    assert "first" not in twice and twice.count(begin) == 1
    assert twice.index("second") < twice.index("trailing")


def _point(rps: float, p50_ms: float, p99_ms: float, errors: int = 0) -> serving_load.Point:
    return serving_load.Point(
        requests=int(rps), seconds=1.0, rps=rps, p50_ms=p50_ms, p99_ms=p99_ms, errors=errors, status_errors=0
    )


def test_throughput_pairs_give_a_ratio_per_metric_and_verdicts_against_issue_7s_targets() -> None:
    import throughput_bench

    rounds = [
        {"ours": _point(2400.0, 5.0, 16.0), "torchserve": _point(1200.0, 20.0, 64.0, errors=1)},
        {"ours": _point(1800.0, 5.0, 20.0), "torchserve": _point(1000.0, 20.0, 50.0)},
        {"ours": _point(2100.0, 5.0, 18.0), "torchserve": _point(1000.0, 20.0, 60.0)},
    ]
    summary = throughput_bench.summaries(rounds)
    assert summary["rps"]["ratio"] == 2.0  # per-round 2.0, 1.8, 2.1
    assert summary["p99_ms"]["ratio"] == 0.3  # per-round 0.25, 0.4, 0.3
    assert paired.errors({32: rounds}) == 1
    lines = throughput_bench.verdicts({"throughput": 2.0, "p99": 0.6})
    assert lines == ["throughput ratio >= 2: 2: met", "p99 ratio <= 0.5: 0.6: NOT met"]
    assert throughput_bench.verdicts({"throughput": None, "p99": None})[0].endswith("not measured")
