"""Several benches in one run, one after the other, with their key ratios as the last lines.

    .venv/bin/python bench/suite.py [--quick] [--no-results] [BENCH ...]

The default set is what a quiet machine runs for the peers figures (``make bench-peers``, ~22 min on two
cores): the throughput bench (ours tuned vs TorchServe's best), KServe on MNIST (its default and best
setting, with every server's memory), gRPC beside REST against KServe, and ResNet-18 against TorchServe
and KServe with the in-process ceiling and memory. ``make bench`` adds the serving and explain benches.

Each bench runs as its own process and writes its own section of bench/results.md; its output passes
through. The JSON object each prints last is kept, and when all have run they are printed together, one
line per bench: ``{"bench": NAME, "seconds": WALL, ...its ratios}`` (``"failed": EXIT`` and no ratios
for a bench that failed), and written to the suite's own section of bench/results.md with the load
average before and after (unless --no-results). Exits 1 when any bench failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import serving_report

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_MD = BENCH_DIR / "results.md"
SECTION = (
    "<!-- bench-suite:begin (written by bench/suite.py; replaced every run) -->",
    "<!-- bench-suite:end -->",
)
# name -> script; each takes --quick and --no-results
BENCHES = {
    "serving": "serving_bench.py",
    "explain": "explain_bench.py",
    "throughput": "throughput_bench.py",
    "kserve": "kserve_bench.py",
    "grpc": "grpc_bench.py",
    "resnet": "resnet_bench.py",
}
PEERS = ("throughput", "kserve", "grpc", "resnet")


def last_json(lines: Iterable[str]) -> dict[str, Any] | None:
    """The last line that is a JSON object, parsed (None when there is none)."""
    found = None
    for line in lines:
        text = line.strip()
        if text.startswith("{") and text.endswith("}"):
            try:
                value = json.loads(text)
            except ValueError:
                continue
            if isinstance(value, dict):
                found = value
    return found


def summary_line(name: str, seconds: float, code: int, ratios: dict[str, Any] | None) -> str:
    """One bench's closing line: its name, wall time, and its ratios (or how it failed)."""
    head: dict[str, Any] = {"bench": name, "seconds": round(seconds)}
    if code != 0 or ratios is None:
        head["failed"] = code if code != 0 else "no JSON line"
    return json.dumps({**head, **(ratios or {})})


def section(command: str, seconds: float, loads: tuple[str, str], lines: Sequence[str]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return "\n".join(
        [
            "## The last suite run: every bench's key ratios (`bench/suite.py`)",
            "",
            f"Run {when}: `{command}`, {seconds / 60:.1f} min in all; load average (1/5/15 min) before"
            f" {loads[0]}, after {loads[1]}. One line per bench, as the suite printed them last; the"
            " sections of the benches hold their tables and method.",
            "",
            "```json",
            *lines,
            "```",
        ]
    )


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def run_bench(name: str, extra: Sequence[str]) -> tuple[int, dict[str, Any] | None]:
    """Run one bench, its output passing through; its exit code and its last JSON object."""
    command = [sys.executable, str(BENCH_DIR / BENCHES[name]), *extra]
    print(f"== {name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    lines = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
    return process.returncode, last_json(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("benches", nargs="*", help=f"from {' '.join(BENCHES)}; default: {' '.join(PEERS)}")
    parser.add_argument("--quick", action="store_true", help="each bench's smoke run")
    parser.add_argument("--no-results", action="store_true", help="do not write bench/results.md")
    args = parser.parse_args(argv)
    if unknown := sorted(set(args.benches) - set(BENCHES)):
        parser.error(f"unknown benches {unknown}; from {' '.join(BENCHES)}")
    extra = [flag for flag, on in (("--quick", args.quick), ("--no-results", args.no_results)) if on]
    lines, failed = [], False
    started, load_before = time.monotonic(), load_average()
    for name in args.benches or PEERS:
        began = time.monotonic()
        code, ratios = run_bench(name, extra)
        lines.append(summary_line(name, time.monotonic() - began, code, ratios))
        failed = failed or code != 0 or ratios is None
    seconds = time.monotonic() - started
    print(f"== all: {seconds:.0f} s", file=sys.stderr)
    if not args.no_results:
        command = " ".join(["bench/suite.py", *(argv if argv is not None else sys.argv[1:])])
        text = section(command, seconds, (load_before, load_average()), lines)
        RESULTS_MD.write_text(serving_report.replace_section(RESULTS_MD.read_text(), text, *SECTION))
    print("\n".join(lines), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
