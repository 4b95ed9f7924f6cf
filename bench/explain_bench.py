"""Explanation latency, paired: TorchServe 0.12.0 against our runtime on the same archive, same machine.

    .venv/bin/python bench/explain_bench.py [--rounds 8] [--seconds 2] [--concurrency 1 4]

The serving benchmark measures each server's explain point once, minutes apart; on a shared 2-core
machine the speed of the machine itself drifts by tens of percent over that time, which the ratio then
reports as ours or TorchServe's. Here they are measured paired (bench/paired.py): side by side, the
load alternating between them in short rounds, the ratio the median of the per-round ratios of p50s.

Both sides explain the seed request (a PNG "2") with integrated gradients at n_steps=15 (TorchServe's
VisionHandler hard-codes 15; ours is told so in the request's parameters), on the seed's
config.properties (1 worker, batchSize 1, no thread settings) and our defaults. The in-process
``floor`` is the work both servers must do per request: the 15-step forward + backward of the model
through :func:`isvc_runtime.explain.attribution.integrated_gradients`, on as many intra-op threads as
our server gives an explanation on this machine. Each server's overhead is its p50 minus that floor.

TorchServe comes from ``bench/.venv-torchserve`` (installed on first use) or, with
``TORCH_ISVC_TS_BIN_DIR`` set, from a prepared folder with nothing installed (bench/serving_env.py): the
bundle of bench/ts_bundle.sh, which bench/device_explain.sh runs on a GPU machine without internet.

Prints a table, writes the explain section of bench/results.md (unless --no-results), and prints the
ratios as the LAST line (one JSON object).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import paired
import serving_bench
import serving_load
import serving_report

REPORT = paired.Report(
    "Explanations, paired: our runtime vs TorchServe 0.12.0 (`bench/explain_bench.py`)",
    "<!-- explain-bench:begin (written by bench/explain_bench.py; replaced on every run) -->",
    "<!-- explain-bench:end -->",
)
GOAL = 0.5  # issue 6: explain p50 <= 0.5x TorchServe's
log = serving_bench.log


# ------------------------------------------------------------------------------------- pure parts


def table_rows(summaries: Mapping[int, Mapping[str, float | None]], floor_ms: float) -> list[list[str]]:
    header = [
        "concurrency",
        "TorchServe p50 ms",
        "ours p50 ms",
        "ratio (median of rounds)",
        "ratio range",
        "TorchServe overhead ms",
        "our overhead ms",
    ]
    rows = [header]
    for concurrency, s in summaries.items():
        if s["ratio"] is None:
            rows.append([f"c{concurrency}"] + ["n/a"] * (len(header) - 1))
            continue
        ts, ours = float(s["ts_median"] or 0), float(s["ours_median"] or 0)
        rows.append(
            [
                f"c{concurrency}",
                f"{ts:.2f}",
                f"{ours:.2f}",
                f"{s['ratio']:.3f}",
                f"{s['ratio_min']:.3f}-{s['ratio_max']:.3f}",
                f"{ts - floor_ms:.2f}" if concurrency == 1 else "",
                f"{ours - floor_ms:.2f}" if concurrency == 1 else "",
            ]
        )
    return rows


# -------------------------------------------------------------------------------------- measuring


def compute_floor(threads: int, seconds: float = 3.0) -> float:
    """p50 ms of the 15-step integrated-gradients pass alone, in a fresh process (see module doc), on
    the GPU where there is one (both servers use it then), its answer copied back as a server's is."""
    code = f"""
import json, statistics, sys, time, torch
sys.path[:0] = [{str(serving_bench.REPO_ROOT / "runtime")!r}, {str(serving_bench.MNIST_DIR)!r}]
from mnist import Net
from isvc_runtime.explain.attribution import integrated_gradients
from isvc_runtime.explain.settings import ExplainOptions
import data
torch.set_num_threads({threads})
device = "cuda" if torch.cuda.is_available() else "cpu"  # where both servers put the model
net = Net(); net.load_state_dict(torch.load({str(serving_bench.MNIST_DIR / "mnist_cnn.pt")!r},
    map_location=device, weights_only=True)); net.to(device).eval()
images, _ = data.heldout_split()
x = data.to_tensor(images[:1]).to(device)
options = ExplainOptions(n_steps={serving_bench.EXPLAIN_STEPS})
times, end = [], time.perf_counter() + {seconds}
while time.perf_counter() < end:
    start = time.perf_counter()
    integrated_gradients(net, x, torch.zeros_like(x), [2], options).cpu()  # as the server answers
    times.append(time.perf_counter() - start)
print(json.dumps(statistics.median(times[len(times) // 5:]) * 1000))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def explain_threads_of_ours() -> int:
    """Intra-op threads our server gives an explanation on an otherwise idle model, this machine."""
    sys.path.insert(0, str(serving_bench.REPO_ROOT / "runtime"))
    from isvc_runtime.cpus import available_cpus
    from isvc_runtime.explain.service import explain_threads
    from isvc_runtime.server import default_torch_threads

    cpus = available_cpus()
    return explain_threads(default_torch_threads(cpus, 1), cpus, 1, idle=True, pinned=False)


def measure(args: argparse.Namespace, work: Path, tools: serving_load.Tools) -> dict[int, list[paired.Round]]:
    ours_store, ts_store = serving_bench.build_stores(work)
    bodies = serving_bench.request_bodies(work)
    ok = serving_bench.explain_answer_ok
    sides = {
        "ours": paired.Side(
            serving_bench.our_server("ours_default", work, ours_store, ()),
            "/v1/models/mnist:explain",
            bodies["explain_ours"],
            ok,
        ),
        "torchserve": paired.Side(
            serving_bench.torchserve_server("ts_default", work, ts_store, env={}),
            "/explanations/mnist",
            bodies["v1"],
            ok,
        ),
    }
    schedule = paired.Schedule.of(args)
    return paired.run(sides, tools, schedule, concurrencies=args.concurrency, warmup_connections=1, log=log)


def main(argv: Sequence[str] | None = None) -> int:
    parser = paired.arguments(__doc__ or "", rounds=8, seconds=2.0, warmup=2.0, quick=(1, 2.0, 1.0))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    args = paired.parse(parser, argv)
    setup = paired.begin(log)
    threads = explain_threads_of_ours()
    floor_ms = compute_floor(threads)
    log(f"compute floor: {floor_ms:.2f} ms on {threads} thread(s)")
    with tempfile.TemporaryDirectory(prefix="isvc-explain-bench-") as tmp:
        measured = measure(args, Path(tmp), setup.tools)
    summaries = {c: paired.summary(paired.metric(r, "p50_ms")) for c, r in measured.items()}
    rows = table_rows(summaries, floor_ms)
    print(serving_report.text_table(rows))
    ratios: dict[str, float | None] = {f"explain_c{c}_p50_ratio": s["ratio"] for c, s in summaries.items()}
    ratios["floor_ms"] = round(floor_ms, 2)
    c1 = summaries.get(1, {}).get("ratio")
    verdict = "not measured" if c1 is None else ("met" if c1 <= GOAL else "NOT met")
    method = [
        f"Both servers up side by side; {args.rounds} alternating rounds of {args.seconds:g} s"
        f" per side at each concurrency (wrk, one thread, keep-alive), seed request, n_steps="
        f"{serving_bench.EXPLAIN_STEPS} on both sides; {paired.errors(measured)} errors.",
        f"Compute floor (the 15-step forward + backward alone, in-process, {threads} intra-op"
        f" thread(s)): {floor_ms:.2f} ms. Overhead = p50 - floor.",
    ]
    closing = [f"Issue 6's goal, c1 p50 <= {GOAL}x TorchServe's: {c1}: {verdict}."]
    table = serving_report.markdown_table(rows)
    paired.finish(setup, args, REPORT, method=method, table=table, ratios=ratios, closing=closing, log=log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
