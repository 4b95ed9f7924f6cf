"""Load points: HTTP driven by wrk (one thread, keep-alive connections, a fixed POST body), gRPC by
bench/grpcload (a fixed unary call, one connection per caller); both print the same summary line.

Each point also carries the load generator's own CPU time (``client_cpu_s``): on a machine whose cores the
servers share, it says how close the generator came to its own ceiling (``1 / CPU per request`` per core).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
from dataclasses import asdict, dataclass, replace
from pathlib import Path

LUA_SCRIPT = Path(__file__).resolve().parent / "wrk_post.lua"
MARKER = "WRK_JSON "


@dataclass(frozen=True)
class Point:
    """One measured load point: throughput and latency of successful and failed requests alike."""

    requests: int  # all answers, errors included
    seconds: float
    rps: float  # successful answers (HTTP < 400) per second: fast 503s do not count as throughput
    p50_ms: float
    p99_ms: float
    errors: int  # HTTP >= 400 responses (wrk's "Non-2xx or 3xx") plus socket errors and timeouts
    status_errors: int
    mean_ms: float = 0.0  # mean latency of all answers
    client_cpu_s: float = 0.0  # CPU seconds the load generator spent on the point

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def parse_wrk_output(stdout: str) -> Point:
    """The point from our Lua ``done()`` line in wrk's output."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith(MARKER)), None)
    if line is None:
        raise ValueError(f"wrk printed no summary line:\n{stdout[-2000:]}")
    raw = json.loads(line[len(MARKER) :])
    seconds = raw["duration_us"] / 1e6
    socket_errors = raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]
    good = max(0, raw["requests"] - raw["status_errors"])
    return Point(
        requests=raw["requests"],
        seconds=seconds,
        rps=good / seconds if seconds > 0 else 0.0,
        p50_ms=raw["p50_us"] / 1000.0,
        p99_ms=raw["p99_us"] / 1000.0,
        errors=raw["status_errors"] + socket_errors,
        status_errors=raw["status_errors"],
        mean_ms=float(raw.get("mean_us", 0.0)) / 1000.0,
        client_cpu_s=float(raw.get("cpu_us", 0.0)) / 1e6,
    )


@dataclass(frozen=True)
class Tools:
    """The load generators: wrk for HTTP, bench/grpcload for gRPC (None where no bench needs it)."""

    wrk: str
    grpcload: str | None = None


def generator_ceiling(point: Point) -> float | None:
    """Requests per second the load generator could drive on one core at the CPU it spent per request
    of ``point`` (None when not measured)."""
    if point.client_cpu_s <= 0 or point.requests <= 0:
        return None
    return point.requests / point.client_cpu_s


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(command: list[str], env: dict[str, str], seconds: float, timeout_s: float) -> Point:
    """Run one load generator to its summary line; its CPU time from the rusage of waited-for children
    where it does not report its own (wrk)."""
    before = _children_cpu_s()
    out = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=seconds + timeout_s + 30, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} failed ({out.returncode}): {out.stderr.strip()}")
    point = parse_wrk_output(out.stdout)
    if point.client_cpu_s == 0:
        point = replace(point, client_cpu_s=_children_cpu_s() - before)
    return point


def run_wrk(
    wrk: str, url: str, body_file: Path, *, connections: int, seconds: float, timeout_s: float = 10.0
) -> Point:
    command = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(LUA_SCRIPT),
        url,
    ]
    return _run(command, {**os.environ, "WRK_BODY_FILE": str(body_file)}, seconds, timeout_s)


def run_grpcload(
    grpcload: str,
    port: int,
    method: str,
    body_file: Path,
    *,
    connections: int,
    seconds: float,
    timeout_s: float = 10.0,
) -> Point:
    """``connections`` callers of ``method`` on 127.0.0.1:``port``, each on its own connection, sending
    the serialised request in ``body_file`` for ``seconds``."""
    command = [
        grpcload,
        f"-addr=127.0.0.1:{port}",
        f"-method={method}",
        f"-body={body_file}",
        f"-c={connections}",
        f"-d={max(1, round(seconds))}s",
        f"-timeout={timeout_s:g}s",
    ]
    return _run(command, dict(os.environ), seconds, timeout_s)
