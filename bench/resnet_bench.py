"""ResNet-18, a compute-bound workload, paired: ours vs TorchServe and KServe, the in-process ceiling, memory.

    .venv/bin/python bench/resnet_bench.py [--rounds 3] [--seconds 5] [--quick]

bench/resnet_workload.py makes the workload here (seeded random weights, made-up labels, 224x224 JPEGs,
cached outside the repository) and one archive with TorchServe's stock ``image_classifier`` handler, which
TorchServe 0.12.0 and our runtime both serve; KServe 0.21 serves the same weights through a ``kserve.Model``
doing the same preprocessing (bench/kserve_anchor/server.py). All setups are up side by side and the load
rotates among them in rounds (bench/paired.py), v1 at c1, c8 and c32 with one JPEG, each load ending only once
its server went idle again (:class:`DrainedSide`):

- ours default (no flags) and ours tuned (``RESNET_TUNED_ARGS``: two one-thread processes, batching);
- TorchServe: its defaults (the seed's config.properties: 1 worker, job_queue_size 10), 1 worker with a queue
  that does not refuse (1000), and 2 workers with ``OMP_NUM_THREADS=1``;
- KServe: its defaults (1 process) and ``--workers 2`` with ``OMP_NUM_THREADS=1``.

Before the load, every image's answer of ours is compared with TorchServe's on the same archive (and
KServe's, reported): every probability within 1e-4, the order only where neighbours differ by more
(bench/resnet_workload.compare_answers). The ceiling: decode + resize + forward in-process, at batch 1 and
at the best batch size, on all cores, and as one one-thread stream per core at once
(bench/serving_ceiling.py); the best of these, measured in the same run before the servers.

A change to the runtime is measured paired against another checkout's runtime with ``--baseline CHECKOUT``
(its default and tuned setups join as ``baseline_default`` and ``baseline_tuned``, started with
``PYTHONPATH=CHECKOUT/runtime``) and ``--sides`` (the setups to run, e.g. ``ours_default
baseline_default``); such a partial run writes nothing to results.md and its JSON line adds
``ours_default_vs_baseline_default_cN`` (req/s, median of the per-round ratios; ``..._p99`` likewise) and
the same for tuned. ``--candidate "FLAGS"`` adds ours with other flags (``ours_candidate``, e.g. a tuned
setting being searched) and ``ours_candidate_vs_ours_tuned_cN``.

Ratios: ``resnet_best_c32_ratio`` (ours tuned / the best error-free peer setup, req/s at c32, median of the
per-round ratios), ``resnet_ceiling_fraction`` (ours tuned c32 / ceiling), ``resnet_p99_over_mean`` (ours
tuned at c32: p99 over its mean latency), and PSS of ours vs each peer's default. Writes its section of
bench/results.md (unless --no-results); the LAST line is one JSON object. Exits 1 when the answers differ.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paired
import peers
import resnet_workload
import serving_bench
import serving_ceiling
import serving_load
import serving_procs

BENCH_DIR = Path(__file__).resolve().parent
REPORT = paired.Report.of(__file__, "ResNet-18, paired: ours vs TorchServe and KServe")
CPUS = len(os.sched_getaffinity(0))
# Batching across requests; the batch stays small, since one ResNet-18 image already takes ~25 ms of two
# cores and a larger batch only adds waiting. No --torch-threads: the runtime gives this compute-bound
# model every core when that measures faster (runtime/isvc_runtime/batching/costs.py), where a fixed 2
# collapsed on cores other jobs shared (0-1 req/s against 3 at a load of 8-13; results.md).
# Two server processes with one torch thread each, batching up to 4 rows: on 2 cores two one-thread forwards
# at once beat one two-thread forward (results.md, "ResNet-18's tuned flags"), as KServe's best does.
RESNET_TUNED_ARGS = (
    "--processes", "2", "--torch-threads", "1", "--batch-size", "4", "--max-batch-delay", "10"
)
OURS_PATH = KSERVE_PATH = f"/v1/models/{resnet_workload.MODEL_NAME}:predict"
TS_PATH = f"/predictions/{resnet_workload.MODEL_NAME}"
# After each load, a side's server computes what the load generator left behind before the next side's load
# starts: until its processes use less than this share of a core, for at most DRAIN_MOST_S seconds.
DRAIN_IDLE_SHARE = 0.1
DRAIN_MOST_S = 30.0
PEERS = ("ts_default", "ts_w1", "ts_w2_omp1", "kserve_default", "kserve_w2_omp1")
log = serving_bench.log


def wait_until_idle(
    server: serving_procs.Server, *, window: float = 0.5, most_s: float = DRAIN_MOST_S
) -> float:
    """Wait until ``server``'s processes use less than ``DRAIN_IDLE_SHARE`` of a core over ``window`` s
    (at most ``most_s``); the seconds waited."""
    assert server.process is not None, f"{server.name} is not started"
    started = time.perf_counter()
    used = serving_procs.group_cpu_seconds(server.process.pid)
    while (waited := time.perf_counter() - started) < most_s:
        time.sleep(window)
        now = serving_procs.group_cpu_seconds(server.process.pid)
        if now - used < DRAIN_IDLE_SHARE * window:
            return waited
        used = now
    return waited


@dataclass(frozen=True)
class DrainedSide(paired.Side):
    """A side whose every load ends only once its server went idle again. When wrk stops, each of its
    connections leaves a request behind that the server still computes (at c32, 32 ResNet-18 images:
    seconds of both cores); without the wait that work runs during the next side's round, and which
    side comes after which (the rounds rotate, but each side keeps its neighbour) decides who pays."""

    def load(self, tools: serving_load.Tools, connections: int, seconds: float) -> serving_load.Point:
        point = super().load(tools, connections, seconds)
        waited = wait_until_idle(self.server)
        if waited >= 1.0:
            log(f"  {self.server.name}: {waited:.1f} s until idle after c{connections}")
        return point


def ceiling(args: argparse.Namespace, jpeg: Path) -> dict[str, float]:
    """Images/s in-process on all cores: one stream on every core at each batch size (``batch1`` ...), one
    one-thread stream per core at once (``streams2_batch1`` ...: each thread decoding and forwarding its own
    images), and ``best``, the most of these: what the hardware gives in-process, the servers' ceiling."""
    out: dict[str, float] = {}
    workload = (
        "--workload",
        "resnet18",
        "--weights",
        str(resnet_workload.weights_path()),
        "--jpeg",
        str(jpeg),
    )
    for batch in args.ceiling_batches:
        rate = serving_ceiling.in_subprocess(CPUS, batch, args.ceiling_seconds, *workload)
        out[f"batch{batch}"] = round(rate, 2)
        log(f"ceiling batch {batch}, {CPUS} threads: {out[f'batch{batch}']:.1f} images/s")
    for batch in args.ceiling_stream_batches if CPUS > 1 else ():
        key = f"streams{CPUS}_batch{batch}"
        rate = serving_ceiling.in_subprocess(1, batch, args.ceiling_seconds, *workload, streams=CPUS)
        out[key] = round(rate, 2)
        log(f"ceiling batch {batch}, {CPUS} one-thread streams at once: {out[key]:.1f} images/s")
    out["best"] = max(out.values())
    return out


def build_sides(
    work: Path, body: Path, baseline: Path | None = None, candidate: Sequence[str] = ()
) -> tuple[dict[str, paired.Side], dict[str, str]]:
    """Every setup (ours, the peers; with ``baseline``, that checkout's runtime default and tuned; with
    ``candidate``, ours with those flags) and their labels."""
    store = resnet_workload.build_store(work / "store")
    ts_store = store / "model-store"  # the very archive ours serves
    ok = resnet_workload.answer_ok
    name = resnet_workload.MODEL_NAME

    def ts(key: str, env: dict[str, str], **config: Any) -> paired.Side:
        server = serving_bench.torchserve_server(key, work, ts_store, env=env, model_name=name, **config)
        return DrainedSide(server, TS_PATH, body, ok)

    sides = {
        "ours_default": DrainedSide(
            serving_bench.our_server("ours_default", work, store, ()), OURS_PATH, body, ok
        ),
        "ours_tuned": DrainedSide(
            serving_bench.our_server("ours_tuned", work, store, RESNET_TUNED_ARGS), OURS_PATH, body, ok
        ),
        "ts_default": ts("ts_default", {}),
        "ts_w1": ts("ts_w1", {}, job_queue_size=1000),
        "ts_w2_omp1": ts("ts_w2_omp1", {"OMP_NUM_THREADS": "1"}, workers=2, job_queue_size=1000),
        "kserve_default": DrainedSide(
            peers.kserve_server("kserve_default", work, name, args=kserve_model_args()), KSERVE_PATH, body, ok
        ),
        "kserve_w2_omp1": DrainedSide(
            peers.kserve_server(
                "kserve_w2_omp1", work, name, workers=2, omp_threads=1, args=kserve_model_args()
            ),
            KSERVE_PATH,
            body,
            ok,
        ),
    }
    if candidate:
        sides["ours_candidate"] = DrainedSide(
            serving_bench.our_server("ours_candidate", work, store, candidate), OURS_PATH, body, ok
        )
    if baseline is not None:
        for flags, key in (((), "baseline_default"), (RESNET_TUNED_ARGS, "baseline_tuned")):
            server = serving_bench.our_server(key, work, store, flags)
            server.env["PYTHONPATH"] = str(baseline / "runtime")
            sides[key] = DrainedSide(server, OURS_PATH, body, ok)
    labels = {
        "ours_default": "ours default (no flags)",
        "ours_tuned": f"ours tuned: `{' '.join(RESNET_TUNED_ARGS)}`",
        "ts_default": "TorchServe default: 1 worker, job_queue_size 10",
        "ts_w1": "TorchServe: 1 worker, job_queue_size 1000",
        "ts_w2_omp1": "TorchServe: 2 workers, `OMP_NUM_THREADS=1`, job_queue_size 1000",
        "kserve_default": "KServe default: " + peers.kserve_setting(1, None),
        "kserve_w2_omp1": "KServe: " + peers.kserve_setting(2, 1),
        "ours_candidate": f"ours candidate: `{' '.join(candidate)}`",
        "baseline_default": f"baseline ({baseline}) default",
        "baseline_tuned": f"baseline ({baseline}) tuned",
    }
    return sides, {key: label for key, label in labels.items() if key in sides}


def kserve_model_args() -> list[str]:
    return [
        "--weights",
        str(resnet_workload.weights_path()),
        "--index-to-name",
        str(resnet_workload.index_to_name_path()),
    ]


def compare(sides: dict[str, paired.Side], jpegs: Sequence[Path], report: dict[str, list[str]]) -> None:
    """Every JPEG to ours (default), TorchServe (its defaults) and KServe (its defaults); the differences of
    ours and of KServe against TorchServe into ``report``."""
    answers: dict[str, list[bytes]] = {
        side: [] for side in ("ours_default", "ts_default", "kserve_default") if side in sides
    }
    if "ts_default" not in answers:
        log("answers not compared: TorchServe's default is not among the sides")
        return
    for jpeg in jpegs:
        body = resnet_workload.v1_body(jpeg)
        for side in answers:
            server = sides[side].server
            status, answer = serving_procs.post(server.port, sides[side].path, body, timeout=120)
            if status != 200:
                raise RuntimeError(f"{side}: HTTP {status} for {jpeg.name}: {answer[:300]!r}")
            answers[side].append(answer)
    report["ours"] = resnet_workload.check_equal(answers, "ours_default", "ts_default")
    if "kserve_default" in answers:
        report["kserve"] = resnet_workload.check_equal(answers, "kserve_default", "ts_default")
    log(
        f"answers vs TorchServe on {len(jpegs)} images: ours {report['ours'] or 'equal'};"
        f" KServe {report.get('kserve', 'not compared') or 'equal'}"
    )


def key_ratios(
    measured: dict[int, list[paired.Round]],
    memory: dict[str, dict[str, float]],
    ceilings: dict[str, float],
    best: str | None,
    differences: dict[str, list[str]],
) -> dict[str, Any]:
    c32 = measured[32]
    tuned_rps = peers.median(c32, "ours_tuned", "rps")
    default_rps = peers.median(c32, "ours_default", "rps")
    p99_over_mean = [
        pair["ours_tuned"].p99_ms / pair["ours_tuned"].mean_ms
        for pair in c32
        if "ours_tuned" in pair and pair["ours_tuned"].mean_ms > 0
    ]
    compared = "ours" in differences
    return {
        "resnet_best_c32_ratio": peers.ratio(c32, "rps", "ours_tuned", best)["ratio"] if best else None,
        "resnet_default_c32_ratio": peers.ratio(c32, "rps", "ours_default", best)["ratio"] if best else None,
        "resnet_best_peer": best,
        "resnet_ceiling_fraction": round(tuned_rps / ceilings["best"], 3) if tuned_rps else None,
        "resnet_default_ceiling_fraction": round(default_rps / ceilings["best"], 3) if default_rps else None,
        "resnet_p99_over_mean": round(statistics.median(p99_over_mean), 3) if p99_over_mean else None,
        "resnet_c32_p99_ratio_vs_best_peer": peers.ratio(c32, "p99_ms", "ours_tuned", best)["ratio"]
        if best
        else None,
        "resnet_answers_equal_torchserve": not differences["ours"] if compared else None,
        "pss_idle_ratio_vs_kserve_default": peers.memory_ratio(
            memory, "ours_default", "kserve_default", "idle"
        ),
        "pss_idle_ratio_vs_ts_default": peers.memory_ratio(memory, "ours_default", "ts_default", "idle"),
        "pss_c32_ratio_vs_kserve_default": peers.memory_ratio(
            memory, "ours_default", "kserve_default", "c32"
        ),
        **baseline_ratios(measured),
    }


# (setup, reference) pairs compared at every concurrency when both were measured (partial runs)
COMPARED = (
    ("ours_default", "baseline_default"),
    ("ours_tuned", "baseline_tuned"),
    ("ours_candidate", "ours_tuned"),
)


def baseline_ratios(measured: dict[int, list[paired.Round]]) -> dict[str, float | None]:
    """Ours over the baseline checkout's same setup, and the candidate over ours tuned: req/s and p99 at
    each concurrency (where both were measured)."""
    out: dict[str, float | None] = {}
    for concurrency, rounds in sorted(measured.items()):
        for side, reference in COMPARED:
            if not any(side in pair and reference in pair for pair in rounds):
                continue
            for name, metric in (("", "rps"), ("_p99", "p99_ms")):
                ratio = peers.ratio(rounds, metric, side, reference)["ratio"]
                out[f"{side}_vs_{reference}_c{concurrency}{name}"] = ratio
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    # --quick: 1 round of 3 s (on a loaded machine one ResNet-18 answer can take a second, and the load
    # generator counts finished ones), c1 and c32, a short ceiling
    parser = paired.arguments(
        __doc__ or "", rounds=3, seconds=5.0, warmup=3.0, quick=(1, 3.0, 1.0), start_timeout=120.0
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--ceiling-batches", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument(
        "--ceiling-stream-batches",
        type=int,
        nargs="*",
        default=[1, 2],
        help="batch sizes of the ceiling's one-thread streams, one per core at once",
    )
    parser.add_argument("--ceiling-seconds", type=float, default=5.0)
    parser.add_argument(
        "--baseline", type=Path, help="another checkout (holds runtime/): its default and tuned setups too"
    )
    parser.add_argument(
        "--sides", nargs="+", help="only these setups (ours_default, baseline_default, ...): a partial run"
    )
    parser.add_argument(
        "--candidate", default="", help="flags of one more setup of ours, 'ours_candidate' (a partial run)"
    )
    args = paired.parse(parser, argv)
    if args.baseline is not None and not (args.baseline / "runtime" / "isvc_runtime").is_dir():
        parser.error(f"{args.baseline}/runtime holds no isvc_runtime package")
    if args.baseline is not None or args.sides or args.candidate:
        args.no_results = True  # a partial run: its figures go into results.md by hand, with their decision
    if args.quick:
        args.concurrency, args.ceiling_batches, args.ceiling_seconds = [1, 32], [1, 8], 1.0
        args.ceiling_stream_batches = [1]
    if 32 not in args.concurrency:
        args.concurrency.append(32)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup = paired.begin(log, torchserve=True, kserve=True)
    jpegs = resnet_workload.jpeg_paths()
    ceilings = ceiling(args, jpegs[0])
    memory: dict[str, dict[str, float]] = {}
    differences: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="isvc-resnet-bench-") as tmp:
        work = Path(tmp)
        body = work / "body-v1.json"
        body.write_bytes(resnet_workload.v1_body(jpegs[0]))
        sides, labels = build_sides(work, body, args.baseline, args.candidate.split())
        if args.sides:
            unknown = set(args.sides) - set(sides)
            if unknown:
                raise SystemExit(f"unknown setups {sorted(unknown)}; known: {sorted(sides)}")
            sides = {key: side for key, side in sides.items() if key in args.sides}
            labels = {key: label for key, label in labels.items() if key in sides}
        optional = ("ts_w1", "ts_w2_omp1", "kserve_w2_omp1")
        ready = functools.partial(compare, sides, jpegs, differences)
        measured = peers.measure(
            setup, args, sides, args.concurrency, memory=memory, optional=optional, on_ready=ready
        )
    best = peers.best(measured, PEERS, 32)
    ratios = key_ratios(measured, memory, ceilings, best, differences)
    print(f"ceiling (decode + resize + forward, {CPUS} threads): {ceilings}", file=sys.stderr)
    ceiling_text = ", ".join(f"{k} {v:.1f}" for k, v in ceilings.items())
    method = [
        f"ResNet-18 (torchvision, weights seeded with"
        f" {resnet_workload.SEED}), one archive with TorchServe's stock `image_classifier` for TorchServe"
        f" and ours; all setups up side by side, {args.rounds} rotating rounds of"
        f" {args.seconds:g} s per setup and concurrency (wrk, one thread, keep-alive, one 224x224"
        " JPEG as a v1 instance); each load ends once its server is idle again (below"
        f" {DRAIN_IDLE_SHARE:g} of a core, at most {DRAIN_MOST_S:g} s), so what wrk leaves queued is"
        " computed before the next setup's load. Cells: medians of the rounds, req/s / p50 ms /"
        f" p99 ms. Best peer: **{labels.get(best or '', 'none error-free')}**. In-process ceiling (JPEG"
        f" decode, resize, crop, normalise, forward; images/s on {CPUS} threads, `streamsN`: N one-thread"
        f" streams at once; the best is the ceiling): {ceiling_text}."
        f" Answers vs TorchServe on {len(jpegs)} images: ours"
        f" {'equal' if not differences.get('ours') else differences['ours'][:5]}, KServe"
        f" {'equal' if not differences.get('kserve') else differences['kserve'][:5]}."
        " Memory: PSS of all a setup's processes after warm-up (idle) and the peak under each load.",
        peers.left_out_text(measured, list(labels), args.start_timeout),
    ]
    peers.report(setup, args, REPORT, method, measured, memory, labels, ratios)
    return 1 if ratios["resnet_answers_equal_torchserve"] is False else 0


if __name__ == "__main__":
    raise SystemExit(main())
