"""Which handler call may start now, and on how many intra-op threads: the rules of several calls at once.

A model's calls run on *streams* (runner.py: one handler thread each). How they share the process's cores
is a :class:`CallPlan`, chosen by measurement (:mod:`isvc_runtime.batching.costs`): a *lone* call, one that
starts with no other call running and no request left waiting, gets ``lone_threads`` (every core, for a
compute-bound model); while requests wait, up to ``streams`` calls run at once on ``stream_threads`` each
(two one-thread calls on two cores). So a lone client gets the fastest single call, and a queue gets the
most calls the cores can carry, with no core given twice:

- a call starting while others run is a stream call, and starts only where a stream and its threads are
  free (``cores``: the most threads the plan ever has running at once);
- a lone call on more threads than a stream's holds every core: what arrives meanwhile waits for it (one
  call's time) rather than oversubscribing the cores it spans, whose OpenMP threads wait on each other.

With one stream (a model that is not compute-bound, a handler that cannot run twice at once, a thread count
fixed by the user) calls run one after another, each on ``lone_threads``. Explicit ``--workers N`` is N
streams of the server's thread count, with no lone call on more.

Pure functions over the plan and the calls running; the runner holds the state and the batcher asks
:func:`may_start` before it takes the next batch.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CallPlan:
    """How calls share the cores now: ``lone_threads`` for a call alone with nothing waiting; up to
    ``streams`` calls at once on ``stream_threads`` each while requests wait or calls run."""

    lone_threads: int
    streams: int = 1
    stream_threads: int = 1

    @property
    def cores(self) -> int:
        """The most intra-op threads the plan has running at once."""
        return max(self.lone_threads, self.streams * self.stream_threads)


@dataclass(frozen=True, slots=True)
class Call:
    """A call about to start: its intra-op ``threads``, the threads it holds of the plan's cores while it
    runs (``claim``), and whether it is a stream call (its cost is a stream call's: costs.py)."""

    threads: int
    claim: int
    stream: bool


def may_start(running: Collection[int], plan: CallPlan) -> bool:
    """Whether a call may start while calls holding ``running`` threads (their claims) run."""
    if not running:
        return True
    return len(running) < plan.streams and sum(running) + plan.stream_threads <= plan.cores


def next_call(running: Collection[int], waiting: int, plan: CallPlan) -> Call:
    """The call starting now (the caller checked :func:`may_start`): a stream call when other calls run or
    ``waiting`` requests remain behind it on a plan of several streams, else a lone call."""
    if running:  # never more threads than the plan's cores less those running (a plan may change)
        threads = max(1, min(plan.stream_threads, plan.cores - sum(running)))
        return Call(threads, threads, stream=True)
    if waiting > 0 and plan.streams > 1:
        return Call(plan.stream_threads, plan.stream_threads, stream=True)
    spans_streams = plan.streams > 1 and plan.lone_threads > plan.stream_threads
    return Call(plan.lone_threads, plan.cores if spans_streams else plan.lone_threads, stream=False)
