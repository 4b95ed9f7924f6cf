"""Polling with a deadline, and repeating in the background, shared by the demo, the stand-ins and the e2e
fixtures."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


def poll(probe: Callable[[], T], timeout: float, interval: float = 0.2) -> T:
    """Call ``probe`` until it returns something truthy (returned) or ``timeout`` seconds pass (its last,
    falsy, value is returned)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def wait_for(probe: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """:func:`poll`, raising ``TimeoutError`` ("timed out after Ns waiting for {what}") on the deadline."""
    value = poll(probe, timeout, interval)
    if not value:
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
    return value


def repeating(action: Callable[[], object], interval: float, stop: threading.Event, name: str
              ) -> threading.Thread:
    """A daemon thread (not started) that calls ``action`` every ``interval`` seconds until ``stop`` is set;
    an exception is logged as a warning and the next round tries again."""

    def run() -> None:
        while not stop.wait(interval):
            try:
                action()
            except Exception as exc:
                log.warning("%s: %s", name, exc)

    return threading.Thread(target=run, name=name, daemon=True)
