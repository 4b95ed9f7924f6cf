"""Paired measurement of two servers: both up side by side, the load alternating between them in rounds.

On a shared machine whose own speed drifts by 20% and more within minutes, two servers measured one after
the other differ by that drift as much as by their code. Here every round measures both, one right after
the other (ours first in even rounds, TorchServe first in odd ones), so each round gives one pair taken
under the same conditions, and a ratio is the median of the per-round ratios. Used by
bench/explain_bench.py and bench/throughput_bench.py; the idle server of a pair uses no measurable CPU
(0.05 CPU-seconds in 30 s for TorchServe's best setup, 0.06 for ours).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import serving_load
import serving_procs
import serving_report

SIDES = ("ours", "torchserve")


@dataclass(frozen=True)
class Side:
    """One server of a pair and the request it is measured with."""

    server: serving_procs.Server
    path: str
    body: Path
    accept: Callable[[bytes], bool]  # the first answer must be right before anything is measured

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}{self.path}"


Round = dict[str, serving_load.Point]  # one point per side


def summary(rounds: Sequence[Mapping[str, float]]) -> dict[str, float | None]:
    """From per-round values (``{"ours": x, "torchserve": y}``, e.g. p50 ms): each side's median value,
    and the median, lowest and highest of the per-round ratios ours / TorchServe (None without rounds)."""
    complete = [r for r in rounds if r.get("ours") and r.get("torchserve")]
    if not complete:
        return {"ours_median": None, "ts_median": None, "ratio": None, "ratio_min": None, "ratio_max": None}
    ratios = [r["ours"] / r["torchserve"] for r in complete]
    return {
        "ours_median": round(statistics.median(r["ours"] for r in complete), 2),
        "ts_median": round(statistics.median(r["torchserve"] for r in complete), 2),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
    }


def metric(rounds: Sequence[Round], name: str) -> list[dict[str, float]]:
    """Per-round pairs of one field of the points (``p50_ms``, ``rps``, ...), for :func:`summary`."""
    return [{side: float(getattr(point, name)) for side, point in pair.items()} for pair in rounds]


def round_order(index: int) -> tuple[str, str]:
    """Which side goes first in round ``index``: alternating, so neither always runs on a warm cache
    or right after the other's load."""
    return SIDES if index % 2 == 0 else SIDES[::-1]


def arguments(description: str, *, rounds: int, seconds: float, warmup: float) -> argparse.ArgumentParser:
    """The options every paired benchmark takes (each adds its own concurrency option)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=rounds, help="alternating rounds per concurrency")
    parser.add_argument("--seconds", type=float, default=seconds, help="seconds of load per side per round")
    parser.add_argument("--warmup", type=float, default=warmup, help="seconds of warm-up per server")
    parser.add_argument("--no-results", action="store_true", help="do not write bench/results.md")
    return parser


def section(
    title: str,
    machine: Mapping[str, str],
    ts_version: str,
    loads: tuple[str, str],
    method: Sequence[str],
    table: str,
    ratios: Mapping[str, object],
    closing: Sequence[str],
) -> str:
    """A results.md section: title, the run's machine and load, the method, the table, the ratios as
    JSON, then the verdict lines."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return "\n".join(
        [
            f"## {title}",
            "",
            f"Run {when}: {machine['nproc']} CPUs ({machine['cpu']}), torch {machine['torch']},"
            f" TorchServe {ts_version}, source {machine['revision']}; load average before {loads[0]},"
            f" after {loads[1]}.",
            *method,
            "",
            table,
            "",
            "```json",
            json.dumps(ratios),
            "```",
            "",
            *closing,
        ]
    )


def write_section(path: Path, text: str, begin: str, end: str) -> None:
    path.write_text(serving_report.replace_section(path.read_text(), text, begin, end))


def run(
    sides: Mapping[str, Side],
    wrk: str,
    *,
    concurrencies: Sequence[int],
    rounds: int,
    seconds: float,
    warmup: float,
    warmup_connections: int,
    log: Callable[[str], None],
) -> dict[int, list[Round]]:
    """Start both servers, check each one's first answer, warm each up, then for every concurrency run
    ``rounds`` alternating rounds of ``seconds`` per side; stop both (also on failure)."""
    for side in SIDES:
        sides[side].server.start()
    results: dict[int, list[Round]] = {c: [] for c in concurrencies}
    try:
        for side in SIDES:
            sides[side].server.wait_first_answer(
                sides[side].path, sides[side].body.read_bytes(), accept=sides[side].accept
            )
            serving_load.run_wrk(
                wrk, sides[side].url, sides[side].body, connections=warmup_connections, seconds=warmup
            )
        for concurrency in concurrencies:
            for index in range(rounds):
                pair: Round = {}
                for side in round_order(index):
                    pair[side] = serving_load.run_wrk(
                        wrk, sides[side].url, sides[side].body, connections=concurrency, seconds=seconds
                    )
                results[concurrency].append(pair)
                ours, ts = pair["ours"], pair["torchserve"]
                log(
                    f"  c{concurrency} round {index + 1}: ours {ours.rps:.0f} req/s,"
                    f" p50 {ours.p50_ms:.2f} ms, p99 {ours.p99_ms:.1f} ms; TorchServe {ts.rps:.0f} req/s,"
                    f" p50 {ts.p50_ms:.2f} ms, p99 {ts.p99_ms:.1f} ms"
                )
    finally:
        left = serving_procs.stop_all()
    if left:
        raise RuntimeError(f"processes left running: {left}")
    return results


def errors(results: Mapping[int, Sequence[Round]]) -> int:
    return sum(point.errors for pairs in results.values() for pair in pairs for point in pair.values())
