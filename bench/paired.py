"""Paired measurement of servers: all up side by side, the load alternating between them in rounds.

On a shared machine whose own speed drifts by 20% and more within minutes, two servers measured one after
the other differ by that drift as much as by their code. Here every round measures both, one right after
the other (ours first in even rounds, TorchServe first in odd ones), so each round gives one pair taken
under the same conditions, and a ratio is the median of the per-round ratios. Used by
bench/explain_bench.py and bench/throughput_bench.py; the idle server of a pair uses no measurable CPU
(0.05 CPU-seconds in 30 s for TorchServe's best setup, 0.06 for ours). More than two sides (the peers
benches: ours, TorchServe and KServe setups) rotate the order each round the same way; a side is one
server and one protocol, so one server may stand in two sides (its REST and its gRPC).

Also what every paired bench does around the rounds: :func:`begin` (load tools, peers' versions, the
machine and its load) and :func:`finish` (its results.md section, the ratios as the LAST line).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import serving_bench
import serving_env
import serving_grpc
import serving_load
import serving_memory
import serving_procs
import serving_report

SIDES = ("ours", "torchserve")
RESULTS_MD = Path(__file__).resolve().parent / "results.md"
GOALS = Path(__file__).resolve().parent / "goals.json"  # each bench's goals, from the issues


@dataclass(frozen=True)
class Side:
    """One server of a pair and the request it is measured with: an HTTP POST of ``body`` to ``path``
    (wrk), or with ``grpc`` a call of the method ``path`` with the serialised message ``body`` on the
    server's gRPC port (bench/grpcload)."""

    server: serving_procs.Server
    path: str
    body: Path
    accept: Callable[[bytes], bool]  # the first answer must be right before anything is measured
    grpc: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}{self.path}"

    def ask(self) -> bytes | None:
        """One request: the answer, None when refused; OSError while nothing listens."""
        if not self.grpc:
            return self.server.post_answer(self.path, self.body.read_bytes())
        assert self.server.grpc_port is not None, f"{self.server.name} serves no gRPC"
        return serving_grpc.unary(self.server.grpc_port, self.path, self.body.read_bytes())

    def load(self, tools: serving_load.Tools, connections: int, seconds: float) -> serving_load.Point:
        if not self.grpc:
            return serving_load.run_wrk(
                tools.wrk, self.url, self.body, connections=connections, seconds=seconds
            )
        assert tools.grpcload is not None and self.server.grpc_port is not None
        return serving_load.run_grpcload(
            tools.grpcload,
            self.server.grpc_port,
            self.path,
            self.body,
            connections=connections,
            seconds=seconds,
        )


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


def arguments(
    description: str,
    *,
    rounds: int,
    seconds: float,
    warmup: float,
    quick: tuple[int, float, float] | None = None,
    start_timeout: float | None = None,
) -> argparse.ArgumentParser:
    """The options every paired benchmark takes (each adds its own concurrency option); with ``quick``
    (rounds, seconds, warm-up) a ``--quick`` smoke run, applied by :func:`parse`; with ``start_timeout``
    the option of :func:`run`'s ``start_timeout``."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=rounds, help="alternating rounds per concurrency")
    parser.add_argument("--seconds", type=float, default=seconds, help="seconds of load per side per round")
    parser.add_argument("--warmup", type=float, default=warmup, help="seconds of warm-up per server")
    parser.add_argument("--no-results", action="store_true", help="do not write bench/results.md")
    if quick is not None:
        parser.set_defaults(quick_schedule=quick)
        rounds_, seconds_, warmup_ = quick
        smoke = f"smoke run: {rounds_} round(s) of {seconds_:g} s, {warmup_:g} s warm-up"
        parser.add_argument("--quick", action="store_true", help=smoke)
    if start_timeout is not None:
        parser.add_argument(
            "--start-timeout",
            type=float,
            default=start_timeout,
            help="seconds from a server's launch to its first right answer (servers start one after the"
            " other); then a candidate is left out",
        )
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments, with ``--quick``'s rounds, seconds and warm-up in place of the given ones."""
    args = parser.parse_args(argv)
    if getattr(args, "quick", False):
        args.rounds, args.seconds, args.warmup = args.quick_schedule
    return args


# ------------------------------------------------------------------------------ around the rounds


@dataclass(frozen=True)
class Setup:
    """What a paired bench has before it measures: its load tools, the peers' versions (name ->
    version), the machine, and its load average when the bench began."""

    tools: serving_load.Tools
    versions: Mapping[str, str]
    machine: Mapping[str, str]
    load_before: str


def begin(
    log: Callable[[str], None], *, torchserve: bool = True, kserve: bool = False, grpc: bool = False
) -> Setup:
    """Stop every server on exit, install or find the tools and peers the bench needs, note the machine."""
    serving_procs.install_cleanup()
    wrk = serving_env.ensure_wrk(log)
    grpcload = serving_env.ensure_grpcload(log) if grpc else None
    versions = {}
    if torchserve:
        versions["TorchServe"] = serving_env.ensure_torchserve(log)["torchserve"]
    if kserve:
        versions["KServe"] = serving_env.ensure_kserve(log)["kserve"]
    return Setup(
        serving_load.Tools(wrk, grpcload),
        versions,
        serving_bench.machine_description(),
        serving_bench.load_average(),
    )


def section(
    title: str,
    setup: Setup,
    load_after: str,
    method: Sequence[str],
    table: str,
    ratios: Mapping[str, object],
    closing: Sequence[str],
) -> str:
    """A results.md section: title, the run's machine, peers and load, the method, the table, the ratios
    as JSON, then the verdict lines."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    machine = setup.machine
    peers = "".join(f" {name} {version}," for name, version in setup.versions.items())
    return "\n".join(
        [
            f"## {title}",
            "",
            f"Run {when}: {machine['nproc']} CPUs ({machine['cpu']}), torch {machine['torch']},{peers}"
            f" source {machine['revision']}; load average before {setup.load_before}, after {load_after}.",
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


Target = tuple[str, str, str, float]  # key of the ratios, what it is, ">=" or "<=", the bound


@dataclass(frozen=True)
class Report:
    """Where and under which title a bench's section goes in bench/results.md, and the goals its ratios
    are held against (the section's closing lines)."""

    title: str
    begin: str  # the section's markers
    end: str
    targets: tuple[Target, ...] = ()
    path: Path = RESULTS_MD

    @classmethod
    def of(cls, script: str, title: str) -> Report:
        """The section of the bench ``script``: ``title`` with the script's name, markers named after it,
        and its goals from bench/goals.json."""
        name = Path(script).name
        stem = Path(script).stem
        goals = json.loads(GOALS.read_text()).get(stem, {"goals": []})["goals"]
        return cls(
            f"{title} (`bench/{name}`)",
            f"<!-- {stem.replace('_', '-')}:begin (written by bench/{name}; replaced every run) -->",
            f"<!-- {stem.replace('_', '-')}:end -->",
            tuple((key, label, comparison, float(bound)) for key, label, comparison, bound in goals),
        )


def finish(
    setup: Setup,
    args: argparse.Namespace,
    report: Report,
    *,
    method: Sequence[str],
    table: str,
    ratios: Mapping[str, object],
    closing: Sequence[str] = (),
    log: Callable[[str], None],
) -> None:
    """Write the bench's section (unless ``--no-results``), then print the ratios as the LAST line."""
    if not args.no_results:
        text = section(report.title, setup, serving_bench.load_average(), method, table, ratios, closing)
        write_section(report.path, text, report.begin, report.end)
        log(f"wrote {report.path}")
    print(json.dumps(ratios), flush=True)


def verdicts(ratios: Mapping[str, object], targets: Sequence[Target]) -> list[str]:
    """One line per target: the ratio against its bound, met / NOT met / not measured."""
    lines = []
    for key, label, comparison, bound in targets:
        value = ratios.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            lines.append(f"{label} {comparison} {bound:g}: not measured")
            continue
        met = value >= bound if comparison == ">=" else value <= bound
        lines.append(f"{label} {comparison} {bound:g}: {value:g}: {'met' if met else 'NOT met'}")
    return lines


# ------------------------------------------------------------------------------------ the rounds


@dataclass(frozen=True)
class Schedule:
    """How long a paired run loads each side: rounds per concurrency, seconds per round, warm-up."""

    rounds: int
    seconds: float
    warmup: float

    @classmethod
    def of(cls, args: argparse.Namespace) -> Schedule:
        return cls(args.rounds, args.seconds, args.warmup)


def _servers(sides: Mapping[str, Side]) -> list[serving_procs.Server]:
    """Each server once, in the order of its first side."""
    found: list[serving_procs.Server] = []
    for side in sides.values():
        if not any(side.server is server for server in found):
            found.append(side.server)
    return found


def _running(server: serving_procs.Server) -> bool:
    return any(server is other for other in serving_procs.running())


def _start_all(
    sides: Mapping[str, Side], optional: Collection[str], timeout: float, log: Callable[[str], None]
) -> tuple[str, ...]:
    """Start the servers one at a time, each once its sides' first right answers came from the one before
    (so no server's start competes with another's: KServe's ``--workers`` children, for one, are killed
    and started anew when they do not answer their parent within 5 s); the sides left. An optional side
    that does not answer within ``timeout`` of its server's launch is left out, its server stopped when
    no other side uses it; any other side's failure raises."""
    names = tuple(sides)
    failed: set[str] = set()
    ordered = sorted(names, key=lambda side: side in optional)  # the required sides first
    for server in _servers({name: sides[name] for name in ordered}):
        server.start()
        for name in [name for name in ordered if sides[name].server is server]:
            side = sides[name]
            if not _running(server):
                failed.add(name)
                continue
            try:
                server.wait_first_answer(ask=side.ask, accept=side.accept, timeout=timeout)
            except RuntimeError as failure:
                if name not in optional:
                    raise
                log(f"{name} left out, it did not answer: {str(failure)[:500]}")
                failed.add(name)
                if all(sides[other].server is not server for other in names if other not in failed):
                    server.stop()
    return tuple(name for name in names if name not in failed)


def run(
    sides: Mapping[str, Side],
    tools: serving_load.Tools,
    schedule: Schedule,
    *,
    concurrencies: Sequence[int],
    warmup_connections: int,
    log: Callable[[str], None],
    memory: dict[str, dict[str, float]] | None = None,
    on_ready: Callable[[], None] | None = None,
    start_timeout: float = 180.0,
    optional: Collection[str] = (),
) -> dict[int, list[Round]]:
    """Start every side's server (one after the other, once where sides share one), check each side's
    first answer, warm each up, then for every concurrency run ``schedule.rounds`` rotating rounds of
    ``schedule.seconds`` per side; stop them all (also on failure).

    With ``memory`` (a dict to fill), each side's PSS in MiB (bench/serving_memory.py) is recorded: under
    ``"idle"`` after all warm-ups, and under ``"cN"`` the peak sampled during its loads at concurrency N;
    ``"processes"``, how many processes its server has then. ``start_timeout``: seconds from a server's
    launch to each of its sides' first answers. ``on_ready``
    runs once every server has answered, before the warm-ups (e.g. to compare answers). A side in
    ``optional`` (a candidate setup) that does not answer in time is left out of the rounds, where any
    other side's failure stops the run."""
    results: dict[int, list[Round]] = {c: [] for c in concurrencies}
    try:
        names = _start_all(sides, optional, start_timeout, log)
        if on_ready is not None:
            on_ready()
        for side in names:
            sides[side].load(tools, warmup_connections, schedule.warmup)
        if memory is not None:
            time.sleep(1.0)  # let the warm-up's last answers and buffers settle
            for side in names:
                server = sides[side].server
                memory.setdefault(side, {})["idle"] = serving_memory.server_pss_mib(server)
                memory[side]["processes"] = serving_memory.server_processes(server)
        for concurrency in concurrencies:
            for index in range(schedule.rounds):
                pair: Round = {}
                for side in round_order(index, names):
                    with serving_memory.PeakPss(sides[side].server, active=memory is not None) as pss:
                        pair[side] = sides[side].load(tools, concurrency, schedule.seconds)
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
