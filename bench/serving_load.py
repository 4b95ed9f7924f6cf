"""Load points driven by wrk (one thread, keep-alive connections, a fixed POST body)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass
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
    )


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
    out = subprocess.run(
        command,
        env={**os.environ, "WRK_BODY_FILE": str(body_file)},
        capture_output=True,
        text=True,
        timeout=seconds + timeout_s + 30,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip()}")
    return parse_wrk_output(out.stdout)
