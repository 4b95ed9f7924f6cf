"""The serving benchmark's pure parts: wrk summary parsing, key ratios, the results.md section."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import serving_load
import serving_report


def _wrk_line(**overrides: int) -> str:
    raw = {
        "requests": 1000, "duration_us": 10_000_000, "p50_us": 2500, "p90_us": 4000, "p99_us": 9000,
        "max_us": 12000, "mean_us": 2600.0, "status_errors": 0, "connect_errors": 0, "read_errors": 0,
        "write_errors": 0, "timeouts": 0,
    }  # fmt: skip
    raw.update(overrides)
    return "Running 10s test\n" + serving_load.MARKER + json.dumps(raw) + "\n"


def _point(rps: float, p50: float, p99: float, errors: int = 0) -> dict[str, float]:
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "errors": errors}


def test_wrk_summary_counts_only_successful_answers_as_throughput() -> None:
    point = serving_load.parse_wrk_output(_wrk_line(status_errors=400, timeouts=3))
    assert point.rps == pytest.approx(60.0)  # (1000 - 400) / 10 s
    assert point.errors == 403
    assert (point.p50_ms, point.p99_ms) == (2.5, 9.0)


def test_wrk_output_without_summary_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="no summary line"):
        serving_load.parse_wrk_output("Running 10s test\nsocket errors\n")


def test_key_ratios_compare_tuned_with_best_and_default_with_default() -> None:
    results = {
        "ts_default": {"v1": {32: _point(80, 300, 800)}, "cold_start_s": 4.0, "explain": _point(60, 20, 40)},
        "ts_best": {"v1": {32: _point(800, 40, 70)}, "cold_start_s": 5.0, "explain": _point(70, 15, 30)},
        "ours_default": {"v1": {32: _point(1200, 25, 40)}, "cold_start_s": 1.0, "explain": _point(0, 6, 9)},
        "ours_tuned": {"v1": {32: _point(2000, 15, 28)}, "cold_start_s": 1.2},
    }
    ratios = serving_report.key_ratios(results, ceiling_images_per_s=4000)
    assert ratios == {
        "v1_c32_throughput_ratio": 2.5,
        "v1_c32_p99_ratio": 0.4,
        "default_c32_throughput_ratio": 15.0,
        "cold_start_ratio": 0.25,  # against the faster TorchServe start
        "explain_p50_ratio": 0.4,  # against the faster TorchServe explain
        "ceiling_fraction": 0.5,
    }
    assert set(ratios) == set(serving_report.RATIO_KEYS)


def test_missing_measurements_give_null_ratios_not_numbers() -> None:
    results = {"ours_default": {"v1": {32: _point(1200, 25, 40)}, "cold_start_s": 1.0, "explain": None}}
    ratios = serving_report.key_ratios(results, ceiling_images_per_s=None)
    assert all(value is None for value in ratios.values())


def test_table_marks_errors_and_missing_points() -> None:
    results = {
        "ts_default": {
            "label": "(a) TorchServe default",
            "v1": {1: _point(140, 7, 12), 32: _point(60, 30, 900, errors=250)},
            "v2": {},
            "explain": None,
            "cold_start_s": 4.5,
        }
    }
    rows = serving_report.table_rows(results, [1, 32])
    assert rows[0][:3] == ["configuration", "v1 c1", "v1 c32"]
    assert rows[1][2] == "60 / 30.0 / 900.0 (250 err)"
    assert rows[1][3:5] == ["n/a", "n/a"]  # no v2 points
    assert rows[1][-3:] == ["n/a", "4.50", "250"]


def test_results_section_is_replaced_in_place_and_other_sections_kept() -> None:
    others = "# Benchmark results\n\n## Storage\nfast\n"
    first = serving_report.replace_section(others, "## Serving\nrun 1")
    assert first.startswith(others.rstrip("\n"))
    second = serving_report.replace_section(first + "\n## Operator\nalso fast\n", "## Serving\nrun 2")
    assert "run 1" not in second and "run 2" in second
    assert "## Storage\nfast" in second and "## Operator\nalso fast" in second
    assert second.count(serving_report.SECTION_BEGIN) == 1


def test_results_section_creates_the_document_when_empty() -> None:
    document = serving_report.replace_section("", "## Serving\nrun")
    assert document.startswith("# Benchmark results\n")
    assert serving_report.SECTION_END in document


def test_best_torchserve_setup_is_the_fastest_error_free_one() -> None:
    candidates = {
        "ts_best_w1": {"v1": {32: _point(600, 50, 90)}, "explain": None},
        "ts_best_w2": {"v1": {32: _point(800, 38, 95)}, "explain": None},
        "ts_best_w3": {"v1": {32: _point(900, 30, 80, errors=12)}, "explain": None},
    }
    assert serving_report.pick_best(candidates, 32) == "ts_best_w2"
    assert serving_report.pick_best({"ts_best_w3": candidates["ts_best_w3"]}, 32) is None


def test_acceptance_lines_say_met_not_met_or_not_measured() -> None:
    lines = serving_report.acceptance(
        {"v1_c32_throughput_ratio": 2.5, "v1_c32_p99_ratio": 0.7, "cold_start_ratio": None}
    )
    assert len(lines) == len(serving_report.TARGETS)
    assert lines[0].endswith("2.5: met")
    assert lines[1].endswith("0.7: NOT met")
    assert lines[3].endswith("not measured")
