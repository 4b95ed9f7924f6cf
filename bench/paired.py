"""Paired measurement of servers: all up side by side, the load alternating between them in rounds.

On a shared machine whose own speed drifts by 20% and more within minutes, two servers measured one after
the other differ by that drift as much as by their code. Here every round measures both, one right after
the other (ours first in even rounds, TorchServe first in odd ones), so each round gives one pair taken
under the same conditions, and a ratio is the median of the per-round ratios. Used by
bench/explain_bench.py and bench/throughput_bench.py; the idle server of a pair uses no measurable CPU
(0.05 CPU-seconds in 30 s for TorchServe's best setup, 0.06 for ours). More than two sides (the peers
benches: ours, TorchServe and KServe setups) rotate the order each round the same way.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import serving_load
import serving_memory
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


def round_order(index: int, sides: Sequence[str] = SIDES) -> tuple[str, ...]:
    """The order of the sides in round ``index``: rotated by one each round (for two sides: alternating),
    so none always runs on a warm cache or right after the same other's load."""
    shift = index % len(sides)
    return (*sides[shift:], *sides[:shift])


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
    memory: dict[str, dict[str, float]] | None = None,
    on_ready: Callable[[], None] | None = None,
    start_timeout: float = 180.0,
    optional: Collection[str] = (),
) -> dict[int, list[Round]]:
    """Start every side's server, check each one's first answer, warm each up, then for every concurrency
    run ``rounds`` rotating rounds of ``seconds`` per side; stop them all (also on failure).

    With ``memory`` (a dict to fill), each side's PSS in MiB (bench/serving_memory.py) is recorded: under
    ``"idle"`` after all warm-ups, and under ``"cN"`` the peak sampled during its loads at concurrency N.
    ``start_timeout``: seconds from launch to each first answer (all start at once, so many big servers
    need more than the default). ``on_ready`` runs once every server has answered, before the warm-ups
    (e.g. to compare answers). A side in ``optional`` (a candidate setup) that does not answer in time is
    stopped and left out of the rounds, where any other side's failure stops the run."""
    names = tuple(sides)
    for side in names:
        sides[side].server.start()
    results: dict[int, list[Round]] = {c: [] for c in concurrencies}
    try:
        for side in sorted(names, key=lambda name: name in optional):  # the required sides first
            try:
                sides[side].server.wait_first_answer(
                    sides[side].path,
                    sides[side].body.read_bytes(),
                    accept=sides[side].accept,
                    timeout=start_timeout,
                )
            except RuntimeError as failure:
                if side not in optional:
                    raise
                log(f"{side} left out, it did not start: {str(failure)[:500]}")
                sides[side].server.stop()
        names = tuple(side for side in names if sides[side].server in serving_procs.running())
        if on_ready is not None:
            on_ready()
        for side in names:
            serving_load.run_wrk(
                wrk, sides[side].url, sides[side].body, connections=warmup_connections, seconds=warmup
            )
        if memory is not None:
            time.sleep(1.0)  # let the warm-up's last answers and buffers settle
            for side in names:
                memory.setdefault(side, {})["idle"] = serving_memory.server_pss_mib(sides[side].server)
        for concurrency in concurrencies:
            for index in range(rounds):
                pair: Round = {}
                for side in round_order(index, names):
                    pss = serving_memory.PeakPss(sides[side].server, active=memory is not None)
                    with pss:
                        pair[side] = serving_load.run_wrk(
                            wrk, sides[side].url, sides[side].body, connections=concurrency, seconds=seconds
                        )
                    if memory is not None:
                        seen = memory[side].get(f"c{concurrency}", 0.0)
                        memory[side][f"c{concurrency}"] = max(seen, pss.peak)
                results[concurrency].append(pair)
                log(
                    f"  c{concurrency} round {index + 1}: "
                    + "; ".join(
                        f"{side} {point.rps:.0f} req/s, p50 {point.p50_ms:.2f} ms, p99 {point.p99_ms:.1f} ms"
                        + (f", {point.errors} err" if point.errors else "")
                        for side, point in pair.items()
                    )
                )
    finally:
        left = serving_procs.stop_all()
    if left:
        raise RuntimeError(f"processes left running: {left}")
    return results


def errors(results: Mapping[int, Sequence[Round]]) -> int:
    return sum(point.errors for pairs in results.values() for pair in pairs for point in pair.values())
