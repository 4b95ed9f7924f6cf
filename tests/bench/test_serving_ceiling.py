"""The in-process ceiling's streams: several threads stepping at once, each step counted once."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import serving_ceiling


def test_streams_step_at_once_and_only_steps_in_the_window_count() -> None:
    threads: set[str] = set()

    def step() -> None:  # a step that, like torch's kernels, lets the other stream run meanwhile
        threads.add(threading.current_thread().name)
        time.sleep(0.01)

    one = serving_ceiling.run_streams(step, threads=1, streams=1, warmup=2, seconds=0.3)
    two = serving_ceiling.run_streams(step, threads=1, streams=2, warmup=2, seconds=0.3)
    assert 15 <= one <= 31
    assert 1.6 * one <= two <= 62
    assert len(threads) == 3
