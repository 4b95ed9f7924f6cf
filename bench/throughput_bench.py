"""v1 throughput at concurrency 32, paired: our runtime tuned against TorchServe 0.12.0 at its best.

    .venv/bin/python bench/throughput_bench.py [--rounds 6] [--seconds 5] [--concurrency 32]

The serving benchmark measures each setup minutes apart; this machine's own speed drifts by 20% or more
over such spans (our tuned runtime alone measured 2,280 to 2,880 req/s at c32 within one minute), and
an unpaired ratio reports that drift as a difference between the servers. Here the two setups the key
ratio compares are measured paired (bench/paired.py): side by side, the load alternating between them
in rounds, each ratio the median of the per-round ratios.

- ours: ``python -m isvc_runtime --model-store STORE --batch-size 32 --max-batch-delay 5
  --torch-threads CPUS`` (serving bench setup (d), ``serving_bench.OURS_TUNED_ARGS``);
- TorchServe: ``OMP_NUM_THREADS=1``, 2 workers, job_queue_size 1000, batchSize 1 (serving bench (b),
  its fastest error-free setup on the KServe v1 envelope on this machine).

Both answer the seed request (v1, a PNG "2"). Prints a table, writes its section of bench/results.md
(unless --no-results) and prints the ratios as the LAST line (one JSON object).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import paired
import serving_bench
import serving_load
import serving_report

REPORT = paired.Report.of(__file__, "Throughput at c32, paired: ours tuned vs TorchServe's best")
TS_BEST_WORKERS = 2
log = serving_bench.log


def summaries(rounds: Sequence[paired.Round]) -> dict[str, dict[str, float | None]]:
    """Per metric (``rps``, ``p99_ms``): :func:`paired.summary` of its per-round pairs."""
    return {name: paired.summary(paired.metric(rounds, name)) for name in ("rps", "p99_ms")}


def verdicts(ratios: dict[str, float | None]) -> list[str]:
    return paired.verdicts(ratios, REPORT.targets)


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


def measure(args: argparse.Namespace, work: Path, tools: serving_load.Tools) -> list[paired.Round]:
    ours_store, ts_store = serving_bench.build_stores(work)
    bodies = serving_bench.request_bodies(work)
    ok = serving_bench.v1_answer_ok
    ts_server = serving_bench.torchserve_server(
        "ts_best",
        work,
        ts_store,
        env={"OMP_NUM_THREADS": "1"},
        workers=TS_BEST_WORKERS,
        job_queue_size=1000,
    )
    sides = {
        "ours": paired.Side(
            serving_bench.our_server("ours_tuned", work, ours_store, serving_bench.OURS_TUNED_ARGS),
            "/v1/models/mnist:predict",
            bodies["v1"],
            ok,
        ),
        "torchserve": paired.Side(ts_server, "/predictions/mnist", bodies["v1"], ok),
    }
    return run_rounds(sides, tools, args)


def run_rounds(
    sides: dict[str, paired.Side], tools: serving_load.Tools, args: argparse.Namespace
) -> list[paired.Round]:
    """The paired rounds at ``args.concurrency`` (also bench/http_layer_bench.py's)."""
    schedule = paired.Schedule.of(args)
    measured = paired.run(
        sides, tools, schedule, concurrencies=[args.concurrency], warmup_connections=8, log=log
    )
    return measured[args.concurrency]


def main(argv: Sequence[str] | None = None) -> int:
    parser = paired.arguments(__doc__ or "", rounds=6, seconds=5.0, warmup=3.0, quick=(1, 2.0, 1.0))
    parser.add_argument("--concurrency", type=int, default=32)
    args = paired.parse(parser, argv)
    setup = paired.begin(log)
    with tempfile.TemporaryDirectory(prefix="isvc-throughput-bench-") as tmp:
        measured = measure(args, Path(tmp), setup.tools)
    summary = summaries(measured)
    rows = table_rows(summary, args.concurrency)
    print(serving_report.text_table(rows))
    ratios = {"throughput": summary["rps"]["ratio"], "p99": summary["p99_ms"]["ratio"]}
    method = [
        f"Both servers up side by side; {args.rounds} alternating rounds of {args.seconds:g} s per"
        f" side (wrk, one thread, {args.concurrency} keep-alive connections, the seed request);"
        f" {paired.errors({args.concurrency: measured})} errors."
        f" Ours: `{' '.join(serving_bench.OURS_TUNED_ARGS)}`;"
        f" TorchServe: `OMP_NUM_THREADS=1`, {TS_BEST_WORKERS} workers, job_queue_size 1000.",
    ]
    closing = [f"- {line}" for line in verdicts(ratios)]
    table = serving_report.markdown_table(rows)
    paired.finish(setup, args, REPORT, method=method, table=table, ratios=ratios, closing=closing, log=log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
