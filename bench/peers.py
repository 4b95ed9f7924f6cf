"""What the peers benches share: KServe's server as a bench process, and reading paired rounds of many sides.

bench/kserve_bench.py (MNIST) and bench/resnet_bench.py (ResNet-18) run several setups of each server side by
side (bench/paired.py rotates the load among them); here a setup is started, the fastest error-free one of a
peer is picked, per-round ratios are taken between two setups, and the tables and the memory figures are laid
out for bench/results.md.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import paired
import serving_bench
import serving_env
import serving_procs
import serving_report

from e2e.processes import free_port

BENCH_DIR = Path(__file__).resolve().parent
KSERVE_SERVER = BENCH_DIR / "kserve_anchor" / "server.py"
log = serving_bench.log


def kserve_server(
    name: str,
    work: Path,
    workload: str,
    *,
    workers: int = 1,
    omp_threads: int | None = None,
    args: Sequence[str] = (),
) -> serving_procs.Server:
    """``kserve.ModelServer`` around ``workload`` (bench/kserve_anchor/server.py) on free loopback ports,
    with KServe's own flags: ``--workers`` uvicorn processes; ``OMP_NUM_THREADS`` when given (else torch's
    default, one intra-op thread per core)."""
    http_port, grpc_port = free_port(), free_port()
    command = [str(serving_env.kserve_python()), str(KSERVE_SERVER), "--workload", workload]
    command += [
        "--http_port",
        str(http_port),
        "--grpc_port",
        str(grpc_port),
        "--workers",
        str(workers),
        *args,
    ]
    env = {} if omp_threads is None else {"OMP_NUM_THREADS": str(omp_threads)}
    return serving_procs.server_in(work, name, command, http_port, env=env, grpc_port=grpc_port)


def kserve_setting(workers: int, omp_threads: int | None) -> str:
    threads = "torch's default threads" if omp_threads is None else f"`OMP_NUM_THREADS={omp_threads}`"
    return f"`--workers {workers}`, {threads}"


def values(rounds: Sequence[paired.Round], side: str, name: str) -> list[float]:
    return [float(getattr(pair[side], name)) for pair in rounds if side in pair]


def median(rounds: Sequence[paired.Round], side: str, name: str) -> float | None:
    found = values(rounds, side, name)
    return round(statistics.median(found), 2) if found else None


def errors(measured: Mapping[int, Sequence[paired.Round]], side: str) -> int:
    return sum(pair[side].errors for rounds in measured.values() for pair in rounds if side in pair)


def left_out(measured: Mapping[int, Sequence[paired.Round]], sides: Sequence[str]) -> list[str]:
    """The sides with no measured round (candidates that did not start, see :func:`paired.run`)."""
    ran = {side for rounds in measured.values() for pair in rounds for side in pair}
    return [side for side in sides if side not in ran]


def ratio(rounds: Sequence[paired.Round], name: str, side: str, reference: str) -> dict[str, float | None]:
    """:func:`paired.summary` of ``side`` over ``reference`` (its ``ours_median`` is ``side``'s median,
    its ``ts_median`` the reference's): the median of the per-round ratios and their range."""
    return paired.summary(
        [
            {"ours": float(getattr(pair[side], name)), "torchserve": float(getattr(pair[reference], name))}
            for pair in rounds
            if side in pair and reference in pair
        ]
    )


def best(
    measured: Mapping[int, Sequence[paired.Round]], candidates: Sequence[str], concurrency: int
) -> str | None:
    """The candidate with the highest median req/s at ``concurrency`` among those with no error at any
    point (a setup that fails some requests, or never started, is not a fair "best")."""
    missing = left_out(measured, candidates)
    error_free = [side for side in candidates if side not in missing and errors(measured, side) == 0]
    scored = [(median(measured[concurrency], side, "rps") or 0.0, side) for side in error_free]
    return max(scored)[1] if scored else None


def load_rows(
    measured: Mapping[int, Sequence[paired.Round]], labels: Mapping[str, str], point: str = "v1"
) -> list[list[str]]:
    """Header plus one row per setup: median req/s / p50 ms / p99 ms per concurrency, and its errors."""
    concurrencies = sorted(measured)
    rows = [["setup", *(f"{point} c{c}" for c in concurrencies), "errors"]]
    for side, label in labels.items():
        cells = []
        for c in concurrencies:
            rps, p50, p99 = (median(measured[c], side, name) for name in ("rps", "p50_ms", "p99_ms"))
            cells.append("n/a" if rps is None else f"{rps:.0f} / {p50:.1f} / {p99:.1f}")
        rows.append([label, *cells, str(errors(measured, side))])
    return rows


def memory_rows(memory: Mapping[str, Mapping[str, float]], labels: Mapping[str, str]) -> list[list[str]]:
    """Header plus one row per setup: its processes, PSS MiB at idle and the peak under each concurrency."""
    keys = sorted({key for entry in memory.values() for key in entry if key != "processes"}, key=_key_order)
    rows = [["setup", "processes", *(f"PSS MiB {key}" for key in keys)]]
    for side, label in labels.items():
        entry = memory.get(side, {})
        processes = f"{entry['processes']:.0f}" if "processes" in entry else "n/a"
        rows.append([label, processes, *(f"{entry[key]:.0f}" if key in entry else "n/a" for key in keys)])
    return rows


def _key_order(key: str) -> tuple[int, int]:
    return (0, 0) if key == "idle" else (1, int(key.lstrip("c")))


def memory_ratio(
    memory: Mapping[str, Mapping[str, float]], side: str, reference: str, key: str
) -> float | None:
    ours, theirs = memory.get(side, {}).get(key), memory.get(reference, {}).get(key)
    return round(ours / theirs, 3) if ours and theirs else None


def measure(
    setup: paired.Setup,
    args: argparse.Namespace,
    sides: Mapping[str, paired.Side],
    concurrencies: Sequence[int],
    **options: Any,
) -> dict[int, list[paired.Round]]:
    """:func:`paired.run` as the peers benches run it: ``args``' schedule and ``--start-timeout``, warm-ups
    at c8; ``options``: its others (``memory``, ``optional``, ``on_ready``)."""
    schedule = paired.Schedule.of(args)
    timeout = args.start_timeout
    return paired.run(
        sides,
        setup.tools,
        schedule,
        concurrencies=concurrencies,
        warmup_connections=8,
        log=log,
        start_timeout=timeout,
        **options,
    )


def left_out_text(
    measured: Mapping[int, Sequence[paired.Round]], sides: Sequence[str], timeout: float
) -> str:
    return (
        f"Left out (no right answer within {timeout:g} s of launch): {left_out(measured, sides) or 'none'}."
    )


def report(
    setup: paired.Setup,
    args: argparse.Namespace,
    where: paired.Report,
    method: Sequence[str],
    measured: Mapping[int, Sequence[paired.Round]],
    memory: Mapping[str, Mapping[str, float]],
    labels: Mapping[str, str],
    ratios: Mapping[str, object],
    point: str = "v1",
) -> None:
    """Print the load table (cells headed ``{point} cN``), the memory table (when measured) and the
    verdicts against ``where.targets``; write the results.md section (unless ``--no-results``) and print
    the ratios as the LAST line (one JSON object)."""
    tables = [load_rows(measured, labels, point)] + ([memory_rows(memory, labels)] if memory else [])
    closing = [f"- {line}" for line in paired.verdicts(ratios, where.targets)]
    for rows in tables:
        print(serving_report.text_table(rows))
    print("\n".join(closing))
    markdown = "\n\n".join(serving_report.markdown_table(rows) for rows in tables)
    paired.finish(setup, args, where, method=method, table=markdown, ratios=ratios, closing=closing, log=log)
