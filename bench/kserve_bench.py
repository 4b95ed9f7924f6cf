"""MNIST v1, paired: our runtime against KServe 0.21's Python model server (default and best), with memory.

    .venv/bin/python bench/kserve_bench.py [--rounds 4] [--seconds 5] [--quick]

The second anchor (issue 18): a KServe user who wraps the example's network in a ``kserve.Model``
(bench/kserve_anchor/server.py, run from bench/.venv-kserve). All setups are up side by side and the load
rotates among them in rounds (bench/paired.py), at c1 and c32 with the seed request (a PNG "2"):

- ours default: ``python -m isvc_runtime --model-store STORE`` (the seed's store, no flags);
- ours tuned: serving_bench.OURS_TUNED_ARGS;
- KServe default: one process, no thread settings (what ``python model.py`` gives);
- KServe candidates for its best: ``--workers`` x ``OMP_NUM_THREADS`` (``--kserve-workers``,
  ``--kserve-threads``); the error-free one with the highest median req/s at c32 is "KServe best";
- TorchServe's best v1 setup (bench/throughput_bench.py's), for the memory comparison in the same run.

Memory: every setup's PSS (all its processes, bench/serving_memory.py) after warm-up and the peak under load.
Ratios: ``kserve_default_c32_ratio`` = ours default / KServe default, ``kserve_best_c32_ratio`` = ours tuned /
KServe best (req/s at c32, medians of the per-round ratios), the c1 latency ratios of the defaults, and PSS.
Writes its section of bench/results.md (unless --no-results); the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paired
import peers
import serving_bench
import throughput_bench

REPORT = paired.Report.of(__file__, "MNIST v1, paired: ours vs KServe 0.21's Python server")
OURS_PATH = KSERVE_PATH = "/v1/models/mnist:predict"
log = serving_bench.log


def kserve_candidates(args: argparse.Namespace) -> dict[str, tuple[int, int | None]]:
    """Setup name -> (workers, OMP threads or None); ``kserve_default`` is always first."""
    found: dict[str, tuple[int, int | None]] = {"kserve_default": (1, None)}
    for workers in args.kserve_workers:
        for threads in args.kserve_threads:
            omp = None if threads == "default" else int(threads)
            name = f"kserve_w{workers}_omp{threads}"
            if (workers, omp) != (1, None):
                found[name] = (workers, omp)
    return found


def build_sides(
    args: argparse.Namespace, work: Path, candidates: dict[str, tuple[int, int | None]]
) -> tuple[dict[str, paired.Side], dict[str, str]]:
    ours_store, ts_store = serving_bench.build_stores(work, torchserve=not args.no_torchserve)
    bodies = serving_bench.request_bodies(work)
    ok = serving_bench.v1_answer_ok
    sides = {
        "ours_default": paired.Side(
            serving_bench.our_server("ours_default", work, ours_store, ()), OURS_PATH, bodies["v1"], ok
        ),
        "ours_tuned": paired.Side(
            serving_bench.our_server("ours_tuned", work, ours_store, serving_bench.OURS_TUNED_ARGS),
            OURS_PATH,
            bodies["v1"],
            ok,
        ),
    }
    labels = {"ours_default": "ours default", "ours_tuned": "ours tuned"}
    for name, (workers, omp) in candidates.items():
        server = peers.kserve_server(name, work, "mnist", workers=workers, omp_threads=omp)
        sides[name] = paired.Side(server, KSERVE_PATH, bodies["v1"], ok)
        labels[name] = ("KServe default: " if name == "kserve_default" else "KServe ") + peers.kserve_setting(
            workers, omp
        )
    if not args.no_torchserve:
        ts_server = serving_bench.torchserve_server(
            "ts_best",
            work,
            ts_store,
            env={"OMP_NUM_THREADS": "1"},
            workers=throughput_bench.TS_BEST_WORKERS,
            job_queue_size=1000,
        )
        sides["torchserve"] = paired.Side(ts_server, "/predictions/mnist", bodies["v1"], ok)
        labels["torchserve"] = (
            f"TorchServe best: {throughput_bench.TS_BEST_WORKERS} workers, `OMP_NUM_THREADS=1`"
        )
    return sides, labels


def key_ratios(
    measured: dict[int, list[paired.Round]], memory: dict[str, dict[str, float]], best: str | None
) -> dict[str, Any]:
    c32, c1 = measured[32], measured[1]
    default = peers.ratio(c32, "rps", "ours_default", "kserve_default")
    tuned = peers.ratio(c32, "rps", "ours_tuned", best) if best else {"ratio": None}
    return {
        "kserve_default_c32_ratio": default["ratio"],
        "kserve_best_c32_ratio": tuned["ratio"],
        "kserve_best": best,
        "kserve_default_c1_ratio": peers.ratio(c1, "rps", "ours_default", "kserve_default")["ratio"],
        "kserve_default_c1_p50_ratio": peers.ratio(c1, "p50_ms", "ours_default", "kserve_default")["ratio"],
        "kserve_default_c1_p99_ratio": peers.ratio(c1, "p99_ms", "ours_default", "kserve_default")["ratio"],
        "pss_idle_ratio_vs_kserve_default": peers.memory_ratio(
            memory, "ours_default", "kserve_default", "idle"
        ),
        "pss_c32_ratio_vs_kserve_default": peers.memory_ratio(
            memory, "ours_default", "kserve_default", "c32"
        ),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = paired.arguments(
        __doc__ or "", rounds=4, seconds=5.0, warmup=3.0, quick=(1, 2.0, 1.0), start_timeout=90.0
    )
    parser.add_argument(
        "--kserve-workers", type=int, nargs="+", default=[1, 2], help="KServe --workers tried"
    )
    parser.add_argument(
        "--kserve-threads",
        nargs="+",
        default=["default", "1"],
        help="OMP_NUM_THREADS values tried for KServe ('default': not set)",
    )
    parser.add_argument("--no-torchserve", action="store_true", help="leave TorchServe out (no Java needed)")
    return paired.parse(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup = paired.begin(log, torchserve=not args.no_torchserve, kserve=True)
    candidates = kserve_candidates(args)
    memory: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="isvc-kserve-bench-") as tmp:
        sides, labels = build_sides(args, Path(tmp), candidates)
        optional = [name for name in candidates if name != "kserve_default"]
        measured = peers.measure(setup, args, sides, [1, 32], memory=memory, optional=optional)
    best = peers.best(measured, list(candidates), 32)
    ratios = key_ratios(measured, memory, best)
    method = [
        "`kserve.Model` in bench/kserve_anchor/server.py, from bench/.venv-kserve. All setups up side by"
        " side;"
        f" {args.rounds} rotating rounds of {args.seconds:g} s per setup and concurrency (wrk, one"
        " thread, keep-alive, the seed request). Cells: medians of the rounds, req/s / p50 ms / p99 ms."
        f" KServe's best is searched over `--workers` {args.kserve_workers} x `OMP_NUM_THREADS`"
        f" {args.kserve_threads}: **{labels.get(best or '', 'none error-free')}**."
        " Memory: PSS of all a setup's processes (/proc/PID/smaps_rollup) after warm-up (idle) and the"
        " peak sampled every 0.5 s under each load.",
        peers.left_out_text(measured, list(labels), args.start_timeout),
    ]
    peers.report(setup, args, REPORT, method, measured, memory, labels, ratios)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
