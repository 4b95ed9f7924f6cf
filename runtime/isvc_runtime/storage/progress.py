"""Progress lines on stderr for large transfers: bytes, rate and ETA, at most one line per interval."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


class Progress:
    """Thread-safe byte counter that prints a status line every ``interval`` seconds at most.

    Nothing is printed for transfers that finish within the first interval, so small models stay quiet.
    """

    def __init__(
        self,
        total: int | None = None,
        *,
        interval: float = 5.0,
        stream: TextIO | None = None,
        clock: type[time.monotonic] | None = None,
    ) -> None:
        self.total = total
        self.done = 0
        self.interval = interval
        self.stream = stream if stream is not None else sys.stderr
        self._now = clock or time.monotonic
        self.started = self._now()
        self._last = self.started
        self._lock = threading.Lock()

    def add_total(self, n: int) -> None:
        with self._lock:
            self.total = (self.total or 0) + n

    def update(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = self._now()
            if now - self._last < self.interval:
                return
            self._last = now
            line = self.line(now)
        print(line, file=self.stream, flush=True)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now if now is not None else self._now()) - self.started, 1e-9)
        rate = self.done / elapsed
        text = f"storage-initializer: {human_bytes(self.done)}"
        if self.total:
            text += f" / {human_bytes(self.total)} ({100 * self.done / self.total:.0f}%)"
        text += f" at {human_bytes(rate)}/s"
        if self.total and rate > 0 and self.done < self.total:
            text += f", ETA {(self.total - self.done) / rate:.0f}s"
        return text
