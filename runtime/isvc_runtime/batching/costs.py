"""What a model's handler calls cost, measured as they run, and the choices made from it.

**How many rows a merged call takes** (a ``batchSize`` 1 model whose requests are merged,
handlers/merging.py): at least ``MERGED_ROWS_FLOOR``, more while they fit in ``MERGED_CALL_BUDGET_S`` of
measured handler time, at most ``most_rows``. What merging saves levels off after a few rows of a large
model (measured in-process on 2 cores, ResNet-18: 31 images/s at batch 1, 38.5 at batch 4, 39.9 at batch
16), while a large merged call's activations stay in the process's memory (32 ResNet-18 images: ~300 MiB
more PSS) and a request that arrives as it starts waits for all of it. MNIST, whose calls are mostly
per-call overhead, gains up to 32 rows. So MNIST (~0.5-3 ms a row) still merges 32 rows, ResNet-18 (~25-60
ms a row) four, shared among the calls running at once (two each on two streams, below): the rows in flight,
and their activations' memory, stay what one call had.

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

**How many calls run at once while requests wait** (a compute-bound model, the server chose the count, and
a handler whose code may run on several streams: runner.py). A call that starts while requests still wait
behind it, or while another call runs, is a *stream* call: ``streams`` of them run at once, each on
``stream_threads`` threads (two one-thread calls on two cores). A call that starts with nothing running and
nothing left waiting is a *lone* call and gets the thread count chosen above (every core). Two one-thread
forwards at once use both cores with no OpenMP barrier between them (ResNet-18 at batch 1 in-process here:
40.6 images/s on two one-thread streams against 21.6 on one two-thread call; with other processes on the
cores 14-16 against 2-3), and in the server (``--workers 2``: 34 req/s at c32 against 22 on one two-thread
call), while a lone request still gets the faster two-thread call (c1 p50 60 against 75 ms; all in
bench/results.md). The choice is
measured as the thread count is: the cost per row of stream calls (timed while another call may run) against
the best lone count's, as throughput (``streams`` rows per stream cost against one per lone cost); requests
that wait go to a single call on every core instead only while that measures at least ``MARGIN`` more rows a
second, and the layout not in use is re-measured as above. On cores shared with other processes a one-thread
stream loses only its own share, where a two-thread call waits on its slower thread: streams are the
preference for the same reason as every core is for a lone call.

Pure bookkeeping, no torch: the runner (runner.py) sets the threads and times the calls, and
:mod:`isvc_runtime.batching.streams` says which call may start when.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field

from .streams import Call, CallPlan, next_call

# Handler time a merged call may take (seconds), from the cost per row measured so far ...
MERGED_CALL_BUDGET_S = 0.1
# ... but never fewer rows than this (where a large model's gain from a batch is mostly had); calls on
# several streams share it, so the rows in flight (and their activations' memory) stay what one call had.
MERGED_ROWS_FLOOR = 4
# A model whose rows cost at least this (seconds, on the server's thread count) is compute-bound.
COMPUTE_BOUND_ROW_S = 0.005
# Weight of a new measurement in a thread count's running cost (exponential smoothing).
SMOOTHING = 0.25
# A compute-bound model goes back to the server's count only when it measures at least this much cheaper per
# row than every core: one call's time on shared cores says little, and two threads are ~1.8x faster on
# quiet ones (where a wrong switch costs the most). Likewise for one call instead of several streams.
MARGIN = 1.25
EXPLORE_FIRST = 8
EXPLORE_MOST = 512
# Most handler calls at once for a compute-bound model (each holds its rows' activations): on more cores
# than this, each stream gets several threads. Only two streams (two cores) were measured.
MOST_STREAMS = 4


def merged_rows(
    row_seconds: float | None,
    most_rows: int,
    budget_s: float = MERGED_CALL_BUDGET_S,
    floor: int = MERGED_ROWS_FLOOR,
) -> int:
    """Rows of a merged call: those whose measured cost fits ``budget_s``, at least ``floor``, at most
    ``most_rows``; ``most_rows`` before anything was measured (the first call measures)."""
    if row_seconds is None or row_seconds <= 0:
        return most_rows
    return min(most_rows, max(floor, int(budget_s / row_seconds)))


def stream_layout(cpus: int) -> tuple[int, int]:
    """``(streams, threads each)`` for requests waiting on a compute-bound model with ``cpus`` CPUs: one
    thread a stream, at most ``MOST_STREAMS`` streams."""
    streams = max(1, min(cpus, MOST_STREAMS))
    return streams, max(1, cpus // streams)


@dataclass
class _Explorer:
    """When to re-measure the option not in use: after ``EXPLORE_FIRST`` decisions, the interval doubling
    up to ``EXPLORE_MOST`` while re-measuring confirms the choice, back to the first when it changes."""

    since: int = 0
    every: int = EXPLORE_FIRST

    def due(self) -> bool:
        """Count a decision; True when this one re-measures the other option."""
        self.since += 1
        if self.since < self.every:
            return False
        self.since = 0
        return True

    def measured(self, *, changed: bool, explored: bool) -> None:
        """A measurement came in: it ``changed`` the choice, or confirmed it by re-measuring."""
        if changed:
            self.every, self.since = EXPLORE_FIRST, 0
        elif explored:
            self.every = min(EXPLORE_MOST, self.every * 2)


@dataclass
class CallCosts:
    """Seconds per row of a model's handler calls: lone calls per intra-op thread count, stream calls.

    ``base_threads``: the count the server configured; ``most_threads``: the most a call may use (the
    process's CPUs), or None when the count was fixed by the user (then no other count is tried, and calls
    run one at a time); ``streams_allowed``: whether the handler may run several calls at once (runner.py);
    ``workers``: the user's ``--workers``/``minWorkers``: above 1, that many calls at once on the base count,
    nothing chosen."""

    base_threads: int
    most_threads: int | None = None
    most_rows: int = 32
    streams_allowed: bool = False
    workers: int = 1
    row_seconds: dict[int, float] = field(default_factory=dict)
    stream_row_seconds: float | None = None
    _lone: _Explorer = field(default_factory=_Explorer)
    _exploring: int | None = None
    _queued: _Explorer = field(default_factory=_Explorer)
    _queued_explore: bool | None = None  # the layout being re-measured: True streams, False one call

    @property
    def choices(self) -> tuple[int, ...]:
        if self.workers > 1 or self.most_threads is None or self.most_threads <= self.base_threads:
            return (self.base_threads,)
        return (self.base_threads, self.most_threads)

    @property
    def chooses_threads(self) -> bool:
        """Whether the runtime sets each call's thread count (else the server's, or the user's, stands)."""
        return len(self.choices) > 1

    @property
    def compute_bound(self) -> bool:
        base = self.row_seconds.get(self.base_threads)
        return base is not None and base >= COMPUTE_BOUND_ROW_S

    @property
    def stream_count(self) -> int:
        """How many calls may run at once for requests that wait, as chosen by the runtime (1: one at a
        time; the user's workers are not a choice)."""
        most = self.most_threads
        if most is None or self.workers > 1 or not self.streams_allowed or not self.compute_bound:
            return 1
        return stream_layout(most)[0]

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

    def streams_win(self) -> bool:
        """Whether waiting requests run on several calls at once: unless one call on the best lone count
        measured ``MARGIN`` more rows a second than the streams together."""
        streams = self.stream_count
        if streams == 1:
            return False
        single = self.row_seconds.get(self.best_threads())
        stream = self.stream_row_seconds
        if single is None or stream is None:
            return True
        return not stream > MARGIN * streams * single

    def threads_for_call(self) -> int:
        """The thread count of the next lone call: the best, or an unmeasured or stale one to (re)measure."""
        choices = self.choices
        if len(choices) == 1 or not self.compute_bound:
            return self.base_threads
        unmeasured = [t for t in choices if t not in self.row_seconds]
        if unmeasured:
            self._exploring = unmeasured[0]
            return unmeasured[0]
        best = self.best_threads()
        if not self._lone.due():
            return best
        self._exploring = next(t for t in choices if t != best)
        return self._exploring

    def plan(self) -> CallPlan:
        """How the next call may run (:mod:`isvc_runtime.batching.streams`): the best lone thread count, and
        the layout of calls for requests that wait; now and then the one not in use, to re-measure it."""
        lone = self.best_threads()
        if self.workers > 1:
            return CallPlan(lone, self.workers, lone)
        streams = self.stream_count
        if streams == 1:
            return CallPlan(lone)
        use_streams = self.streams_win()
        if self._queued_explore is None and self.stream_row_seconds is not None and self._queued.due():
            self._queued_explore = not use_streams
        if self._queued_explore is not None:
            use_streams = self._queued_explore
        if not use_streams:
            return CallPlan(lone)
        return CallPlan(lone, streams, stream_layout(self.most_threads or 1)[1])

    def start_call(self, running: Collection[int], waiting: int) -> tuple[CallPlan, Call]:
        """The plan in force and the call starting now, beside calls holding ``running`` threads and with
        ``waiting`` requests left behind it: a lone call gets the best count, or one to re-measure."""
        plan = self.plan()
        call = next_call(running, waiting, plan)
        if not call.stream:
            call = Call(self.threads_for_call(), call.claim, stream=False)
        return plan, call

    def record(self, threads: int, rows: int, seconds: float, *, stream: bool = False) -> None:
        """A successful call of ``rows`` rows on ``threads`` threads took ``seconds`` of handler time;
        ``stream``: a stream call (started while requests waited or another call ran)."""
        if rows <= 0 or seconds < 0:
            return
        per_row = seconds / rows
        if stream and self.workers == 1:
            self._record_stream(per_row)
            return
        before = self.best_threads() if len(self.row_seconds) == len(self.choices) else None
        known = self.row_seconds.get(threads)
        explored = threads == self._exploring
        if known is None or explored:
            # a first or a renewed measurement: what it costs now, not an average with long ago
            self.row_seconds[threads] = per_row
        else:
            self.row_seconds[threads] = known + SMOOTHING * (per_row - known)
        if before is not None:
            # a new choice: re-measure the other count soon, in case one noisy call made it; while
            # re-measuring confirms the choice, less often (a count in use is measured by every call:
            # that it got slower shows at once, without exploring)
            self._lone.measured(changed=self.best_threads() != before, explored=explored)
        if explored:
            self._exploring = None
        if self._queued_explore is False:  # one call re-measured while requests waited
            self._queued.measured(changed=not self.streams_win(), explored=True)
            self._queued_explore = None

    def _record_stream(self, per_row: float) -> None:
        known = self.stream_row_seconds
        before = self.streams_win()
        if known is None or self._queued_explore:
            self.stream_row_seconds = per_row
        else:
            self.stream_row_seconds = known + SMOOTHING * (per_row - known)
        if self._queued_explore:
            self._queued.measured(changed=self.streams_win() != before, explored=True)
            self._queued_explore = None

    def merged_rows(self, budget_s: float = MERGED_CALL_BUDGET_S) -> int:
        """Rows the next merged call may take: at the cost per row of stream calls when requests wait on
        several streams (which share the floor of rows), else of the best thread count."""
        streams = self.stream_count
        if streams > 1 and self.streams_win():
            seconds = self.stream_row_seconds
            if seconds is None:
                seconds = self.row_seconds.get(self.base_threads)
            floor = max(1, math.ceil(MERGED_ROWS_FLOOR / streams))
            return merged_rows(seconds, self.most_rows, budget_s, floor)
        return merged_rows(self.row_seconds.get(self.best_threads()), self.most_rows, budget_s)
