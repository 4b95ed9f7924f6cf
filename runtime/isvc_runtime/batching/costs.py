"""What a model's handler calls cost, measured as they run, and the two choices made from it.

**How many rows a merged call takes** (a ``batchSize`` 1 model whose requests are merged,
handlers/merging.py): at least ``MERGED_ROWS_FLOOR``, more while they fit in ``MERGED_CALL_BUDGET_S`` of
measured handler time, at most ``most_rows``. What merging saves levels off after a few rows of a large
model (measured in-process on 2 cores, ResNet-18: 31 images/s at batch 1, 38.5 at batch 4, 39.9 at batch
16), while a large merged call's activations stay in the process's memory (32 ResNet-18 images: ~300 MiB
more PSS) and a request that arrives as it starts waits for all of it. MNIST, whose calls are mostly
per-call overhead, gains up to 32 rows. So MNIST (~0.5-3 ms a row) still merges 32 rows, ResNet-18 (~25-60
ms a row) four.

**How many intra-op threads a call gets**, when the server chose the count (no ``--torch-threads``, no
``OMP_NUM_THREADS``). The server's count leaves a core to the event loop (HTTP, JSON), which a small model
keeps busy. A compute-bound model (a row costs at least ``COMPUTE_BOUND_ROW_S``, so the loop's ~0.5 ms per
request is a few percent of it) leaves that core idle (ResNet-18 at c32: the loop's thread took ~1.5% of a
core), so its calls use every core of the process: on a quiet machine that is ~1.8x faster per row
(ResNet-18: 61 ms an image on one thread, 34 on two). But on cores shared with other processes an OpenMP
pass waits on whichever of its threads is descheduled (measured here under a load of 5: ResNet-18 at batch
1, 15 images/s on one thread, 4 on two), so the choice is measured, not assumed: each thread count's cost
per row is tracked, and the server's count is used instead only while it measures at least ``MARGIN``
cheaper per row. The count not in use is tried again now and then (after ``EXPLORE_FIRST`` calls, the
interval doubling up to ``EXPLORE_MOST`` while the choice stands, back to ``EXPLORE_FIRST`` whenever it
changes: a re-measured call on the worse count is a slow answer, so it is rare once the choice is clear,
and a choice made on a bad measurement is not kept for long).

Why every core is the preference and not the server's count: one call's time on a shared machine varies by
2x from one call to the next (ResNet-18 at a load of 5, 4-row calls on one thread: 48 to 187 ms a row), so
a single re-measurement is mostly noise, and a margin asked of the count that is ~1.8x faster on a quiet
machine let such noise pin a compute-bound model to one thread (bench/results.md, ResNet-18 by default).

Pure bookkeeping, no torch: the runner (runner.py) sets the threads and times the calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Handler time a merged call may take (seconds), from the cost per row measured so far ...
MERGED_CALL_BUDGET_S = 0.1
# ... but never fewer rows than this (where a large model's gain from a batch is mostly had).
MERGED_ROWS_FLOOR = 4
# A model whose rows cost at least this (seconds, on the server's thread count) is compute-bound.
COMPUTE_BOUND_ROW_S = 0.005
# Weight of a new measurement in a thread count's running cost (exponential smoothing).
SMOOTHING = 0.25
# A compute-bound model goes back to the server's count only when it measures at least this much cheaper per
# row than every core: one call's time on shared cores says little, and two threads are ~1.8x faster on
# quiet ones (where a wrong switch costs the most).
MARGIN = 1.25
EXPLORE_FIRST = 8
EXPLORE_MOST = 512


def merged_rows(row_seconds: float | None, most_rows: int, budget_s: float = MERGED_CALL_BUDGET_S) -> int:
    """Rows of a merged call: those whose measured cost fits ``budget_s``, at least ``MERGED_ROWS_FLOOR``,
    at most ``most_rows``; ``most_rows`` before anything was measured (the first call measures)."""
    if row_seconds is None or row_seconds <= 0:
        return most_rows
    return min(most_rows, max(MERGED_ROWS_FLOOR, int(budget_s / row_seconds)))


@dataclass
class CallCosts:
    """Seconds per row of a model's handler calls, per intra-op thread count.

    ``base_threads``: the count the server configured; ``most_threads``: the most a call may use (the
    process's CPUs), or None when the count was fixed by the user (then no other count is tried)."""

    base_threads: int
    most_threads: int | None = None
    most_rows: int = 32
    row_seconds: dict[int, float] = field(default_factory=dict)
    _calls_since_explore: int = 0
    _explore_every: int = EXPLORE_FIRST
    _exploring: int | None = None

    @property
    def choices(self) -> tuple[int, ...]:
        if self.most_threads is None or self.most_threads <= self.base_threads:
            return (self.base_threads,)
        return (self.base_threads, self.most_threads)

    @property
    def compute_bound(self) -> bool:
        base = self.row_seconds.get(self.base_threads)
        return base is not None and base >= COMPUTE_BOUND_ROW_S

    def best_threads(self) -> int:
        """For a compute-bound model the most threads, unless the base count measured cheaper per row by
        ``MARGIN``; otherwise the base count."""
        if not self.compute_bound or len(self.choices) == 1:
            return self.base_threads
        base, most = self.choices
        most_seconds = self.row_seconds.get(most)
        if most_seconds is not None and self.row_seconds[base] * MARGIN < most_seconds:
            return base
        return most

    def threads_for_call(self) -> int:
        """The thread count of the next call: the best, or an unmeasured or stale one to (re)measure."""
        choices = self.choices
        if len(choices) == 1 or not self.compute_bound:
            return self.base_threads
        unmeasured = [t for t in choices if t not in self.row_seconds]
        if unmeasured:
            self._exploring = unmeasured[0]
            return unmeasured[0]
        best = self.best_threads()
        self._calls_since_explore += 1
        if self._calls_since_explore < self._explore_every:
            return best
        self._calls_since_explore = 0
        self._exploring = next(t for t in choices if t != best)
        return self._exploring

    def record(self, threads: int, rows: int, seconds: float) -> None:
        """A successful call of ``rows`` rows on ``threads`` threads took ``seconds`` of handler time."""
        if rows <= 0 or seconds < 0:
            return
        per_row = seconds / rows
        before = self.best_threads() if len(self.row_seconds) == len(self.choices) else None
        known = self.row_seconds.get(threads)
        if known is None or threads == self._exploring:
            # a first or a renewed measurement: what it costs now, not an average with long ago
            self.row_seconds[threads] = per_row
        else:
            self.row_seconds[threads] = known + SMOOTHING * (per_row - known)
        after = self.best_threads() if len(self.row_seconds) == len(self.choices) else None
        if before is not None and after != before:
            # a new choice: re-measure the other count soon, in case one noisy call made it
            self._explore_every = EXPLORE_FIRST
            self._calls_since_explore = 0
        elif threads == self._exploring and before is not None:
            # while re-measuring confirms the choice, measure less often (a count in use is measured
            # by every call: that it got slower shows at once, without exploring)
            self._explore_every = min(EXPLORE_MOST, self._explore_every * 2)
        if threads == self._exploring:
            self._exploring = None

    def merged_rows(self, budget_s: float = MERGED_CALL_BUDGET_S) -> int:
        """Rows the next merged call may take, at the cost per row of the best thread count."""
        return merged_rows(self.row_seconds.get(self.best_threads()), self.most_rows, budget_s)
