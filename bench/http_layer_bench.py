"""The HTTP layer's cost, paired: this checkout's runtime against another checkout's (say, the raw-ASGI
layer the runtime had before Starlette), same model store, same flags, v1 predict at concurrency 32.

    .venv/bin/python bench/http_layer_bench.py --baseline /path/to/other/checkout [--rounds 8] [--seconds 5]

Both runtimes are up side by side and measured in alternating rounds (bench/paired.py; its two sides
are named ``ours`` and ``torchserve``: here ``torchserve`` is the baseline runtime, started with
``PYTHONPATH=BASELINE/runtime``, and ``ours`` this checkout's, with ``PYTHONPATH=`` its ``runtime``).
The seed request; flags: our tuned setup (``serving_bench.OURS_TUNED_ARGS``) unless ``--default-flags``;
``--flags "..."`` gives this checkout's side other flags and ``--baseline-flags "..."`` the baseline's (so
``--baseline .`` pairs two settings of one runtime, say ``--processes 2`` against the tuned flags).
Prints the table and, as the LAST line, the throughput and p99 ratios this / baseline (one JSON
object). Writes nothing to bench/results.md: paste the numbers there with the decision they support
(issue 15: keep raw ASGI only if it is >= 10% faster, i.e. a throughput ratio <= 0.909).
"""

from __future__ import annotations

import json
import shlex
import tempfile
from collections.abc import Sequence
from pathlib import Path

import paired
import serving_bench
import serving_report
import throughput_bench

log = serving_bench.log
THIS_SRC = Path(__file__).resolve().parents[1] / "runtime"


def main(argv: Sequence[str] | None = None) -> int:
    parser = paired.arguments(__doc__ or "", rounds=8, seconds=5.0, warmup=3.0)
    parser.add_argument("--baseline", type=Path, required=True, help="the other checkout (holds runtime/)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--default-flags", action="store_true", help="both without the tuned flags")
    parser.add_argument("--flags", type=shlex.split, help="this side's flags, one string (default: above)")
    parser.add_argument(
        "--baseline-flags", type=shlex.split, help="the baseline's flags, one string (default: above)"
    )
    args = parser.parse_args(argv)
    baseline_src = (args.baseline / "runtime").resolve()
    if not (baseline_src / "isvc_runtime").is_dir():
        parser.error(f"{baseline_src} holds no isvc_runtime package")
    setup = paired.begin(log, torchserve=False)
    setup_flags = () if args.default_flags else serving_bench.OURS_TUNED_ARGS
    flags = setup_flags if args.flags is None else tuple(args.flags)
    baseline_flags = setup_flags if args.baseline_flags is None else tuple(args.baseline_flags)
    with tempfile.TemporaryDirectory(prefix="isvc-http-layer-bench-") as tmp:
        work = Path(tmp)
        store, _ = serving_bench.build_stores(work, torchserve=False)
        body = serving_bench.request_bodies(work)["v1"]
        baseline = serving_bench.our_server("baseline", work, store, baseline_flags)
        baseline.env["PYTHONPATH"] = str(baseline_src)
        path, ok = "/v1/models/mnist:predict", serving_bench.v1_answer_ok
        this = serving_bench.our_server("this", work, store, flags)
        this.env["PYTHONPATH"] = str(THIS_SRC)
        sides = {
            "ours": paired.Side(this, path, body, ok),
            "torchserve": paired.Side(baseline, path, body, ok),
        }
        measured = throughput_bench.run_rounds(sides, setup.tools, args)
    summary = throughput_bench.summaries(measured)
    rows = throughput_bench.table_rows(summary, args.concurrency)
    rows[0] = [
        "point",
        f"baseline ({args.baseline})",
        "this checkout",
        "ratio (median of rounds)",
        "ratio range",
    ]
    print(serving_report.text_table(rows))
    loads = f"load average before {setup.load_before}, after {serving_bench.load_average()}"
    log(f"{loads}; flags: this {' '.join(flags)!r}, baseline {' '.join(baseline_flags)!r}")
    print(json.dumps({"throughput": summary["rps"]["ratio"], "p99": summary["p99_ms"]["ratio"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
