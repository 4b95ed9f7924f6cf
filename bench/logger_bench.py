"""The payload logger's cost when its sink fails (issue 19): v1 throughput at c32 of our tuned runtime with
a logger whose sink refuses connections, or accepts them and never answers, against the same runtime
without a logger (and, for reference, with a healthy sink that answers 200).

    .venv/bin/python bench/logger_bench.py [--rounds 10] [--seconds 5] [--concurrency 32] [--sides ...]
    .venv/bin/python bench/logger_bench.py --quick          # a smoke run: 1 round of 2 s, no results.md

Sides (all ``serving_bench.OURS_TUNED_ARGS``, the seed request):
- ``none``: no logger (the baseline every ratio divides by);
- ``refused``: ``--logger-url`` to a loopback port nobody listens on;
- ``hanging``: ``--logger-url`` to a loopback listener that accepts connections, reads, never answers;
- ``healthy``: ``--logger-url`` to a real CloudEvents receiver (tests/support/cloudevents_sink.py); only
  when named in ``--sides`` (the default is none, refused, hanging: see ``DEFAULT_SIDES``).

Rounds alternate the sides' order (the machine's speed drifts, see throughput_bench.py); each side's
ratio is the median of its per-round ratios to ``none``. The issue's target: refused and hanging within
5% of no logger (ratio >= 0.95). After the load, each logger side's ``isvc_logger_events_*`` counters are
read from its /metrics. Prints a table, writes its section of bench/results.md (unless --no-results or
--quick) and prints the ratios as the LAST line (one JSON object).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import paired
import serving_bench
import serving_env
import serving_load
import serving_procs
import serving_report

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "tests"))
sys.path.insert(0, str(BENCH_DIR.parent))
from support.cloudevents_sink import cloudevents_sink  # noqa: E402

from e2e.processes import refusing_port  # noqa: E402

RESULTS_MD = BENCH_DIR / "results.md"
SECTION_BEGIN = "<!-- logger-bench:begin (written by bench/logger_bench.py; replaced every run) -->"
SECTION_END = "<!-- logger-bench:end -->"
SIDES = ("none", "refused", "hanging", "healthy")
# The healthy side is opt-in (--sides none,healthy): its receiver runs on the same two cores and drains the
# runtime's queued events after its own round, which slows whichever side the alternation puts next.
DEFAULT_SIDES = ("none", "refused", "hanging")
TARGET = 0.95  # refused and hanging: throughput within 5% of no logger
PATH = "/v1/models/mnist:predict"
log = serving_bench.log


@contextlib.contextmanager
def hanging_sink() -> Iterator[str]:
    """A loopback listener that accepts every connection, reads what comes and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                connection, _ = listener.accept()
                connection.setblocking(False)
                held.append(connection)
            for connection in held:
                with contextlib.suppress(BlockingIOError, OSError):
                    connection.recv(1 << 16)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    finally:
        stop.set()
        thread.join(2)
        for connection in held:
            connection.close()
        listener.close()


def logger_counters(port: int) -> dict[str, float]:
    """``isvc_logger_events_*`` samples from the runtime's /metrics on its inference port."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    counters = {}
    for line in text.splitlines():
        if line.startswith("isvc_logger_events_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            if float(value):
                counters[name] = float(value)
    return counters


def measure(args: argparse.Namespace, work: Path, wrk: str, urls: dict[str, str]) -> dict[str, list[float]]:
    store, _ = serving_bench.build_stores(work, torchserve=False)
    body = serving_bench.request_bodies(work)["v1"]
    servers = {}
    for side in args.sides:
        extra = ("--logger-url", urls[side]) if side != "none" else ()
        servers[side] = serving_bench.our_server(f"logger_{side}", work, store,
                                                 (*serving_bench.OURS_TUNED_ARGS, *extra))
    rps: dict[str, list[float]] = {side: [] for side in args.sides}
    try:
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_first_answer(PATH, body.read_bytes(), accept=serving_bench.v1_answer_ok)
            serving_load.run_wrk(wrk, f"http://127.0.0.1:{server.port}{PATH}", body, connections=8,
                                 seconds=args.warmup)
        for index in range(args.rounds):
            order = list(args.sides) if index % 2 == 0 else list(reversed(args.sides))
            for side in order:
                point = serving_load.run_wrk(wrk, f"http://127.0.0.1:{servers[side].port}{PATH}", body,
                                             connections=args.concurrency, seconds=args.seconds)
                if point.errors:
                    raise RuntimeError(f"{side}: {point.errors} errors in round {index + 1}")
                rps[side].append(point.rps)
            points = ", ".join(f"{s} {rps[s][-1]:.0f} req/s" for s in args.sides)
            log(f"  round {index + 1}: {points}")
        for side in args.sides:
            if side != "none":
                log(f"  {side}: {logger_counters(servers[side].port)}")
    finally:
        left = serving_procs.stop_all()
    if left:
        raise RuntimeError(f"processes left running: {left}")
    return rps


def ratios(rps: dict[str, list[float]]) -> dict[str, float | None]:
    """Each side's median per-round ratio to ``none``."""
    base = rps.get("none", [])
    return {side: round(statistics.median(v / b for v, b in zip(values, base, strict=True)), 3)
            if base and values else None for side, values in rps.items() if side != "none"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = paired.arguments(__doc__ or "", rounds=10, seconds=5.0, warmup=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sides", type=lambda text: tuple(text.split(",")), default=DEFAULT_SIDES,
                        help=f"comma-separated, from {','.join(SIDES)} (none first)")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s, 1 s warm-up, no results.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.warmup, args.no_results = 1, 2.0, 1.0, True
    if set(args.sides) - set(SIDES) or "none" not in args.sides:
        parser.error(f"--sides: from {','.join(SIDES)}, including none")
    serving_procs.install_cleanup()
    wrk = serving_env.ensure_wrk(log)
    load_before = serving_bench.load_average()
    with tempfile.TemporaryDirectory(prefix="isvc-logger-bench-") as tmp, hanging_sink() as hanging, \
            cloudevents_sink() as healthy, refusing_port() as refusing:
        urls = {"refused": f"http://127.0.0.1:{refusing}/", "hanging": hanging, "healthy": healthy.url}
        rps = measure(args, Path(tmp), wrk, urls)
        log(f"  healthy sink received {len(healthy.received)} events")
    load_after = serving_bench.load_average()
    result = ratios(rps)
    rows = [["side", "req/s (median)", "ratio to no logger (median of rounds)"]] + [
        [side, f"{statistics.median(values):.0f}", "1" if side == "none" else f"{result[side]}"]
        for side, values in rps.items()]
    print(serving_report.text_table(rows))
    if not args.no_results:
        verdict = [f"{side}: {result[side]} ({'met' if (result[side] or 0) >= TARGET else 'NOT met'})"
                   for side in ("refused", "hanging") if side in result]
        text = "\n".join([
            f"Payload logger, v1 c{args.concurrency}, {args.rounds} alternating rounds of {args.seconds:g} s"
            f" ({', '.join(serving_bench.machine_description().values())});"
            f" target ratio >= {TARGET} for a failing sink."
            f" Load average before {load_before}, after {load_after}.",
            "",
            serving_report.markdown_table(rows), "", *verdict])
        paired.write_section(RESULTS_MD, text, SECTION_BEGIN, SECTION_END)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
