"""v1 throughput at concurrency 32, paired: our runtime tuned against TorchServe 0.12.0 at its best.

    .venv/bin/python bench/throughput_bench.py [--rounds 6] [--seconds 5] [--concurrency 32]

The serving benchmark measures each setup minutes apart; this machine's own speed drifts by 20% or more
over such spans (our tuned runtime alone measured 2,280 to 2,880 req/s at c32 within one minute), and
an unpaired ratio reports that drift as a difference between the servers. Here the two setups the key
ratio compares run side by side and the load alternates between them in rounds (the method of
bench/explain_bench.py, whose pure parts this reuses): each round gives one pair of points under the
same conditions, and each ratio is the median of the per-round ratios.

- ours: ``python -m isvc_runtime --model-store STORE --batch-size 32 --max-batch-delay 5
  --torch-threads CPUS`` (serving bench setup (d), ``serving_bench.OURS_TUNED_ARGS``);
- TorchServe: ``OMP_NUM_THREADS=1``, 2 workers, job_queue_size 1000, batchSize 1 (serving bench (b),
  its fastest error-free setup on the KServe v1 envelope on this machine).

Both answer the seed request (v1, a PNG "2"). Prints a table, writes its section of bench/results.md
(unless --no-results) and prints the ratios as the LAST line (one JSON object).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import explain_bench
import serving_bench
import serving_env
import serving_load
import serving_procs
import serving_report

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_MD = BENCH_DIR / "results.md"
SECTION_BEGIN = "<!-- throughput-bench:begin (written by bench/throughput_bench.py; replaced every run) -->"
SECTION_END = "<!-- throughput-bench:end -->"
TS_BEST_WORKERS = 2
TARGETS = (  # issue 7: ours tuned vs TorchServe's best at c32
    ("throughput", ">=", 2.0),
    ("p99", "<=", 0.5),
)
log = serving_bench.log


def summaries(rounds: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, float | None]]:
    """Per metric (``rps``, ``p99_ms``): :func:`explain_bench.paired_summary` of its per-round pairs."""
    return {
        metric: explain_bench.paired_summary([{side: r[side][metric] for side in r} for r in rounds])
        for metric in ("rps", "p99_ms")
    }


def verdicts(ratios: dict[str, float | None]) -> list[str]:
    lines = []
    for name, comparison, bound in TARGETS:
        value = ratios.get(name)
        if value is None:
            lines.append(f"{name} ratio {comparison} {bound:g}: not measured")
            continue
        met = value >= bound if comparison == ">=" else value <= bound
        lines.append(f"{name} ratio {comparison} {bound:g}: {value:g}: {'met' if met else 'NOT met'}")
    return lines


def table_rows(summary: dict[str, dict[str, float | None]], concurrency: int) -> list[list[str]]:
    rps, p99 = summary["rps"], summary["p99_ms"]
    if rps["ratio"] is None or p99["ratio"] is None:
        return [["point", "result"], [f"v1 c{concurrency}", "n/a"]]
    return [
        ["point", "TorchServe best", "ours tuned", "ratio (median of rounds)", "ratio range"],
        [
            f"v1 c{concurrency} req/s",
            f"{rps['ts_median']:.0f}",
            f"{rps['ours_median']:.0f}",
            f"{rps['ratio']:.3f}",
            f"{rps['ratio_min']:.3f}-{rps['ratio_max']:.3f}",
        ],
        [
            f"v1 c{concurrency} p99 ms",
            f"{p99['ts_median']:.1f}",
            f"{p99['ours_median']:.1f}",
            f"{p99['ratio']:.3f}",
            f"{p99['ratio_min']:.3f}-{p99['ratio_max']:.3f}",
        ],
    ]


def measure(args: argparse.Namespace, work: Path, wrk: str) -> dict[str, Any]:
    ours_store, ts_store = serving_bench.build_stores(work)
    bodies = serving_bench.request_bodies(work)
    servers = {
        "ours": serving_bench.our_server("ours_tuned", work, ours_store, serving_bench.OURS_TUNED_ARGS),
        "torchserve": serving_bench.torchserve_server(
            "ts_best",
            work,
            ts_store,
            env={"OMP_NUM_THREADS": "1"},
            workers=TS_BEST_WORKERS,
            job_queue_size=1000,
        ),
    }
    paths = {"ours": "/v1/models/mnist:predict", "torchserve": "/predictions/mnist"}
    urls: dict[str, str] = {}
    for side in explain_bench.SIDES:
        servers[side].start()
    try:
        for side in explain_bench.SIDES:
            servers[side].wait_first_answer(
                paths[side], bodies["v1"].read_bytes(), accept=serving_bench.v1_answer_ok
            )
            urls[side] = f"http://127.0.0.1:{servers[side].port}{paths[side]}"
            serving_load.run_wrk(wrk, urls[side], bodies["v1"], connections=8, seconds=args.warmup)
        rounds: list[dict[str, dict[str, float]]] = []
        errors = 0
        for index in range(args.rounds):
            pair: dict[str, dict[str, float]] = {}
            for side in explain_bench.round_order(index):
                point = serving_load.run_wrk(
                    wrk, urls[side], bodies["v1"], connections=args.concurrency, seconds=args.seconds
                )
                errors += point.errors
                pair[side] = {"rps": point.rps, "p99_ms": point.p99_ms}
            rounds.append(pair)
            ours, ts = pair["ours"], pair["torchserve"]
            log(
                f"  round {index + 1}: ours {ours['rps']:.0f} req/s p99 {ours['p99_ms']:.1f} ms,"
                f" TorchServe {ts['rps']:.0f} req/s p99 {ts['p99_ms']:.1f} ms"
            )
    finally:
        left = serving_procs.stop_all()
    if left:
        raise RuntimeError(f"processes left running: {left}")
    return {"rounds": rounds, "errors": errors}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of load per side per round")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per server")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--no-results", action="store_true", help="do not write bench/results.md")
    args = parser.parse_args(argv)
    serving_procs.install_cleanup()
    wrk = serving_env.ensure_wrk(log)
    ts_info = serving_env.ensure_torchserve(log)
    machine = serving_bench.machine_description()
    load_before = serving_bench.load_average()
    with tempfile.TemporaryDirectory(prefix="isvc-throughput-bench-") as tmp:
        measured = measure(args, Path(tmp), wrk)
    load_after = serving_bench.load_average()
    summary = summaries(measured["rounds"])
    rows = table_rows(summary, args.concurrency)
    print(serving_report.text_table(rows))
    ratios = {"throughput": summary["rps"]["ratio"], "p99": summary["p99_ms"]["ratio"]}
    if not args.no_results:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        section = "\n".join(
            [
                "## Throughput at c32, paired: ours tuned vs TorchServe's best (`bench/throughput_bench.py`)",
                "",
                f"Run {when}: {machine['nproc']} CPUs ({machine['cpu']}), torch {machine['torch']},"
                f" TorchServe {ts_info['torchserve']}, source {machine['revision']}; load average before"
                f" {load_before}, after {load_after}.",
                f"Both servers up side by side; {args.rounds} alternating rounds of {args.seconds:g} s per"
                f" side (wrk, one thread, {args.concurrency} keep-alive connections, the seed request);"
                f" {measured['errors']} errors. Ours: `{' '.join(serving_bench.OURS_TUNED_ARGS)}`;"
                f" TorchServe: `OMP_NUM_THREADS=1`, {TS_BEST_WORKERS} workers, job_queue_size 1000.",
                "",
                serving_report.markdown_table(rows),
                "",
                "```json",
                json.dumps(ratios),
                "```",
                "",
                *[f"- {line}" for line in verdicts(ratios)],
            ]
        )
        document = RESULTS_MD.read_text()
        RESULTS_MD.write_text(explain_bench.replace_section(document, section, SECTION_BEGIN, SECTION_END))
        log(f"wrote {RESULTS_MD}")
    print(json.dumps(ratios))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
