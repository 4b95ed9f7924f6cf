"""MNIST over gRPC, paired: our runtime against KServe 0.21's own Python server, v2 gRPC beside v2 REST.

    .venv/bin/python bench/grpc_bench.py [--rounds 4] [--seconds 4] [--quick] [--concurrency 1 32]
    .venv/bin/python bench/grpc_bench.py --baseline OTHER_CHECKOUT [--candidate DIR] [--concurrency 32]

Both servers serve the example's network (ours: the seed's store; KServe: the ``kserve.Model`` of
bench/kserve_anchor/server.py) and answer the Open Inference Protocol over REST and over gRPC from one
process. Every setup is up side by side; the load rotates among the (setup, protocol) sides in rounds
(bench/paired.py), at c1 and c32, with the seed's PNG "2":

- v2 REST: ``POST /v2/models/mnist/infer``, a BYTES input holding the PNG as base64 (wrk);
- v2 gRPC: ``ModelInfer`` with the PNG's bytes in ``bytes_contents`` (bench/grpcload: c callers, one
  HTTP/2 connection each, as wrk's c keep-alive connections).

Setups: ours default (no flags) and ours tuned (serving_bench.OURS_TUNED_ARGS); KServe's default (one
process, torch's default threads) and, as candidates for its best gRPC setting, ``OMP_NUM_THREADS`` values
(``--kserve-threads``). Not searched, by KServe's source (kserve 0.21.0): ``--workers`` starts more
uvicorn processes for REST only, the gRPC server is one ``GRPCServer`` in the main process
(``model_server.py``, ``ModelServer.start``); ``--max_threads`` sizes the thread pool of that ``grpc.aio``
server, which the servicer's ``async def ModelInfer`` does not run on (``protocol/grpc/server.py``,
``protocol/grpc/servicer.py``).

Ratios (medians of the per-round ratios at c32): ``grpc_c32_ratio`` / ``grpc_c32_p99_ratio`` = ours tuned
over KServe's best gRPC setting (issue 16's goal: >= 2 and <= 0.5), ``grpc_default_c32_ratio`` /
``grpc_default_c32_p99_ratio`` = ours default over KServe's default; the c1 and REST ones beside them; and
the load generators' ceilings (requests/s one core of each drives at the CPU it spent per request, and
the largest share of a core it took), so that neither is the bottleneck unseen. Writes its section of
bench/results.md (unless --no-results or --concurrency leaves out c1 or c32); the LAST line is one JSON
object.

With ``--baseline`` (another checkout, holding ``runtime/``) it pairs our gRPC with itself instead, no
KServe: this checkout's runtime (or ``--candidate``'s) against the baseline's, each in the default and the
tuned setup, as bench/http_layer_bench.py does for HTTP; the LAST line holds the ratios this / baseline
(``{setup}_c{N}_ratio`` for req/s, ``_p50_ratio``, ``_p99_ratio``); results.md is left alone.
``--setups tuned`` measures one of the two setups only; ``--candidate-flags "..."`` runs the candidate with
those flags instead of the setup's (``--baseline . --setups tuned --candidate-flags "..."`` pairs a
setting against the tuned flags on one runtime).
"""

from __future__ import annotations

import argparse
import base64
import json
import shlex
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import paired
import peers
import serving_bench
import serving_grpc
import serving_load
import serving_report

REPORT = paired.Report.of(__file__, "MNIST v2 gRPC and REST, paired: ours vs KServe 0.21's Python server")
REST_PATH = "/v2/models/mnist/infer"
THIS_CHECKOUT = Path(__file__).resolve().parents[1]
log = serving_bench.log
# Our two setups: name -> runtime flags
OUR_SETUPS: dict[str, tuple[str, ...]] = {"default": (), "tuned": serving_bench.OURS_TUNED_ARGS}


def kserve_candidates(threads: Sequence[str]) -> dict[str, int | None]:
    """Server name -> OMP threads (None: not set); ``kserve_default`` is always first."""
    found: dict[str, int | None] = {"kserve_default": None}
    for value in threads:
        if value != "default":
            found[f"kserve_omp{value}"] = int(value)
    return found


def grpc_body(work: Path) -> Path:
    """The seed's PNG as a serialised ``ModelInferRequest``."""
    mnist_request = json.loads(serving_bench.MNIST_REQUEST.read_bytes())
    png = base64.b64decode(mnist_request["instances"][0]["data"], validate=True)
    path = work / "body-grpc.pb"
    path.write_bytes(serving_grpc.infer_request("mnist", [png]))
    return path


def build_sides(
    work: Path, candidates: Mapping[str, int | None]
) -> tuple[dict[str, paired.Side], dict[str, str]]:
    """Each server's REST and gRPC side (KServe's candidates beyond its default: gRPC only)."""
    store, _ = serving_bench.build_stores(work, torchserve=False)
    rest_body, grpc_body_path = serving_bench.request_bodies(work)["v2"], grpc_body(work)
    rest_ok, grpc_ok = serving_bench.v2_answer_ok, serving_grpc.answer_is([serving_bench.EXPECTED_DIGIT])
    servers = {
        "ours_default": serving_bench.our_server("ours_default", work, store, (), grpc=True),
        "ours_tuned": serving_bench.our_server(
            "ours_tuned", work, store, serving_bench.OURS_TUNED_ARGS, grpc=True
        ),
    }
    names = {"ours_default": "ours default", "ours_tuned": "ours tuned"}
    for name, omp in candidates.items():
        servers[name] = peers.kserve_server(name, work, "mnist", omp_threads=omp)
        names[name] = ("KServe default: " if name == "kserve_default" else "KServe ") + peers.kserve_setting(
            1, omp
        )
    sides: dict[str, paired.Side] = {}
    labels: dict[str, str] = {}
    for name, server in servers.items():
        sides[f"{name}_grpc"] = paired.Side(server, serving_grpc.METHOD, grpc_body_path, grpc_ok, grpc=True)
        labels[f"{name}_grpc"] = f"{names[name]}, gRPC"
        if name.startswith("ours") or name == "kserve_default":
            sides[f"{name}_rest"] = paired.Side(server, REST_PATH, rest_body, rest_ok)
            labels[f"{name}_rest"] = f"{names[name]}, REST"
    return sides, labels


def generator_load(measured: Mapping[int, Sequence[paired.Round]], sides: Sequence[str]) -> dict[str, Any]:
    """A load generator at the points of ``sides``: the requests/s one core of it could drive (median of
    the points' :func:`serving_load.generator_ceiling`), the most requests/s a point measured, and the
    largest share of one core it used at a point."""
    points = [pair[side] for rounds in measured.values() for pair in rounds for side in sides if side in pair]
    ceilings = [c for c in map(serving_load.generator_ceiling, points) if c]
    shares = [p.client_cpu_s / p.seconds for p in points if p.seconds > 0]
    return {
        "ceiling_rps": round(statistics.median(ceilings)) if ceilings else None,
        "max_rps": round(max(p.rps for p in points)) if points else None,
        "max_core_share": round(max(shares), 3) if shares else None,
    }


def key_ratios(
    measured: dict[int, list[paired.Round]], best: str | None, sides: Sequence[str]
) -> dict[str, Any]:
    best_side = f"{best}_grpc" if best else None

    c32, c1 = measured.get(32, []), measured.get(1, [])

    def ratio(rounds: list[paired.Round], name: str, side: str, reference: str | None) -> float | None:
        return peers.ratio(rounds, name, side, reference)["ratio"] if reference else None

    grpc_load = generator_load(measured, [s for s in sides if s.endswith("_grpc")])
    wrk_load = generator_load(measured, [s for s in sides if s.endswith("_rest")])
    return {
        "grpc_c32_ratio": ratio(c32, "rps", "ours_tuned_grpc", best_side),
        "grpc_c32_p99_ratio": ratio(c32, "p99_ms", "ours_tuned_grpc", best_side),
        "grpc_default_c32_ratio": ratio(c32, "rps", "ours_default_grpc", "kserve_default_grpc"),
        "grpc_default_c32_p99_ratio": ratio(c32, "p99_ms", "ours_default_grpc", "kserve_default_grpc"),
        "grpc_default_vs_best_c32_ratio": ratio(c32, "rps", "ours_default_grpc", best_side),
        "grpc_default_c1_ratio": ratio(c1, "rps", "ours_default_grpc", "kserve_default_grpc"),
        "grpc_default_c1_p50_ratio": ratio(c1, "p50_ms", "ours_default_grpc", "kserve_default_grpc"),
        "grpc_kserve_best": best,
        "rest_v2_c32_ratio": ratio(c32, "rps", "ours_tuned_rest", "kserve_default_rest"),
        "rest_v2_default_c32_ratio": ratio(c32, "rps", "ours_default_rest", "kserve_default_rest"),
        "ours_tuned_c32_grpc_over_rest": ratio(c32, "rps", "ours_tuned_grpc", "ours_tuned_rest"),
        "grpcload_ceiling_rps": grpc_load["ceiling_rps"],
        "grpcload_max_core_share": grpc_load["max_core_share"],
        "wrk_ceiling_rps": wrk_load["ceiling_rps"],
        "wrk_max_core_share": wrk_load["max_core_share"],
        "max_rps": max(filter(None, (grpc_load["max_rps"], wrk_load["max_rps"])), default=None),
    }


def generator_text(name: str, ratios: Mapping[str, Any]) -> str:
    return (
        f"{name} could drive at least {ratios[f'{name}_ceiling_rps']} requests/s on one core (its CPU time"
        f" per request, start-up included), and took at most {ratios[f'{name}_max_core_share']} of a core"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = paired.arguments(
        __doc__ or "", rounds=4, seconds=4.0, warmup=3.0, quick=(1, 2.0, 1.0), start_timeout=90.0
    )
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 32], help="connections of the load (default: 1 32)"
    )
    parser.add_argument(
        "--baseline", type=Path, help="pair this checkout's gRPC with this other checkout's (holds runtime/)"
    )
    parser.add_argument(
        "--candidate",
        type=Path,
        default=THIS_CHECKOUT,
        help="with --baseline: the checkout measured against it (default: this one)",
    )
    parser.add_argument(
        "--setups",
        nargs="+",
        choices=list(OUR_SETUPS),
        default=list(OUR_SETUPS),
        help="with --baseline: our setups measured (default: all)",
    )
    parser.add_argument(
        "--candidate-flags",
        type=shlex.split,
        help="with --baseline: the candidate's flags, one string, instead of each setup's",
    )
    parser.add_argument(
        "--kserve-threads",
        nargs="+",
        default=["default", "1"],
        help="OMP_NUM_THREADS values tried for KServe's gRPC ('default': not set)",
    )
    args = paired.parse(parser, argv)
    for checkout in filter(None, (args.baseline, args.candidate)):
        if not (checkout / "runtime" / "isvc_runtime").is_dir():
            parser.error(f"{checkout}/runtime holds no isvc_runtime package")
    return args


def baseline_sides(
    work: Path,
    checkouts: Mapping[str, Path],
    setups: Sequence[str],
    flags_of: Mapping[str, Sequence[str]],
) -> tuple[dict[str, paired.Side], dict[str, str]]:
    """Our gRPC side per checkout (name -> checkout) and setup, each server running its checkout's runtime
    with its setup's flags, or ``flags_of[name]`` where given."""
    store, _ = serving_bench.build_stores(work, torchserve=False)
    body, ok = grpc_body(work), serving_grpc.answer_is([serving_bench.EXPECTED_DIGIT])
    sides: dict[str, paired.Side] = {}
    labels: dict[str, str] = {}
    for setup in setups:
        for name, checkout in checkouts.items():
            flags = flags_of.get(name, OUR_SETUPS[setup])
            server = serving_bench.our_server(f"{name}_{setup}", work, store, flags, grpc=True)
            server.env["PYTHONPATH"] = str((checkout / "runtime").resolve())
            sides[f"{name}_{setup}_grpc"] = paired.Side(server, serving_grpc.METHOD, body, ok, grpc=True)
            labels[f"{name}_{setup}_grpc"] = f"{name} ({checkout}), ours {setup} `{' '.join(flags)}`, gRPC"
    return sides, labels


def baseline_ratios(
    measured: Mapping[int, Sequence[paired.Round]], setups: Sequence[str]
) -> dict[str, float | None]:
    """This / baseline per setup and concurrency: req/s, p50 and p99 (medians of the per-round ratios)."""

    def ratio(rounds: Sequence[paired.Round], metric: str, setup: str) -> float | None:
        return peers.ratio(rounds, metric, f"this_{setup}_grpc", f"baseline_{setup}_grpc")["ratio"]

    return {
        f"{setup}_c{c}_{key}": ratio(rounds, metric, setup)
        for c, rounds in measured.items()
        for setup in setups
        for metric, key in (("rps", "ratio"), ("p50_ms", "p50_ratio"), ("p99_ms", "p99_ratio"))
    }


def main_baseline(args: argparse.Namespace) -> int:
    setup = paired.begin(log, torchserve=False, grpc=True)
    with tempfile.TemporaryDirectory(prefix="isvc-grpc-bench-") as tmp:
        sides, labels = baseline_sides(
            Path(tmp),
            {"this": args.candidate, "baseline": args.baseline},
            args.setups,
            {} if args.candidate_flags is None else {"this": args.candidate_flags},
        )
        measured = peers.measure(setup, args, sides, args.concurrency)
    print(serving_report.text_table(peers.load_rows(measured, labels, point="v2")))
    log(f"load average before {setup.load_before}, after {serving_bench.load_average()}")
    print(json.dumps(baseline_ratios(measured, args.setups)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.baseline is not None:
        return main_baseline(args)
    if not {1, 32} <= set(args.concurrency):
        args.no_results = True  # the section's ratios are those of c1 and c32
    setup = paired.begin(log, torchserve=False, kserve=True, grpc=True)
    candidates = kserve_candidates(args.kserve_threads)
    with tempfile.TemporaryDirectory(prefix="isvc-grpc-bench-") as tmp:
        sides, labels = build_sides(Path(tmp), candidates)
        optional = [f"{name}_grpc" for name in candidates if name != "kserve_default"]
        measured = peers.measure(setup, args, sides, args.concurrency, optional=optional)
    best = peers.best(measured, [f"{name}_grpc" for name in candidates], max(args.concurrency))
    best_server = best.removesuffix("_grpc") if best else None
    ratios = key_ratios(measured, best_server, list(sides))
    method = [
        f"Sides: each server's v2 REST (wrk, the seed's PNG as a base64 BYTES input) and v2 gRPC"
        f" (`ModelInfer`, the PNG's bytes in `bytes_contents`, bench/grpcload: one connection per caller);"
        f" {args.rounds} rotating rounds of {args.seconds:g} s per side and concurrency. Cells: medians of"
        " the rounds, req/s / p50 ms / p99 ms. KServe's best gRPC setting is searched over"
        f" `OMP_NUM_THREADS` {args.kserve_threads} (its `--workers` fork REST only and `--max_threads` is a"
        " pool its async servicer does not use, kserve 0.21.0 `model_server.py`, `protocol/grpc/server.py`):"
        f" **{labels.get(best or '', 'none error-free')}**."
        f" Load generators, so that neither is the bottleneck: {generator_text('grpcload', ratios)};"
        f" {generator_text('wrk', ratios)}; the fastest side answered {ratios['max_rps']}/s.",
        peers.left_out_text(measured, list(labels), args.start_timeout),
    ]
    peers.report(setup, args, REPORT, method, measured, {}, labels, ratios, point="v2")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
