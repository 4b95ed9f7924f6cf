"""Retries with exponential backoff, for transient failures only."""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable
from typing import TypeVar

from isvc_runtime.storage.errors import TransientError, scrub

T = TypeVar("T")


def attempts_from_env() -> int:
    return max(1, int(os.environ.get("STORAGE_RETRIES", "5")) + 1)


def with_retries(
    action: Callable[[], T],
    what: str,
    *,
    attempts: int | None = None,
    base_delay: float | None = None,
    max_delay: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``action``; on :class:`TransientError` wait base*2**n (with jitter) and try again."""
    attempts = attempts or attempts_from_env()
    base = (
        base_delay if base_delay is not None else float(os.environ.get("STORAGE_RETRY_BASE_SECONDS", "0.5"))
    )
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except TransientError as e:
            if attempt == attempts:
                raise TransientError(f"{e} (gave up after {attempts} attempts)") from e
            delay = min(max_delay, base * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
            reason = str(e) if str(e).startswith(what) else f"{what}: {e}"
            print(
                scrub(f"storage-initializer: {reason}; retry {attempt}/{attempts - 1} in {delay:.1f}s"),
                file=sys.stderr,
                flush=True,
            )
            sleep(delay)
    raise AssertionError("unreachable")
