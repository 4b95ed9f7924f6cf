"""One served model: its load state, its batcher, and the thread(s) its handler runs on.

``ModelRunner.predict(rows, headers, request_id)`` is the whole interface the protocols use: rows in
TorchServe's shape (dicts with ``data``/``body``), one answer per row out. Handlers run on the
runner's own threads (one per stream, batching/streams.py), never on the event loop.
"""

from __future__ import annotations

import asyncio
import binascii
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .batching import Batcher, Pending
from .batching.costs import CallCosts
from .batching.streams import Call, CallPlan, may_start
from .config import ModelSettings
from .errors import ApiError, InputError, NotReady, ResponseTimeout
from .loader import EntryPoint, LoadedModel
from .observe import get_observer

log = logging.getLogger("isvc_runtime.runner")

# Most rows of a merged call (a batchSize 1 model whose handler allows merging, handlers/merging.py):
# requests are merged only while they wait anyway (no delay), so under load a call takes what queued
# while the previous one ran, up to this, and up to what fits its time budget (batching/costs.py).
MERGED_MAX_ROWS = 32

T = TypeVar("T")

LOADING, READY, FAILED = "loading", "ready", "failed"


def _input_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [InputError, binascii.Error]
    try:
        from PIL import UnidentifiedImageError

        types.append(UnidentifiedImageError)
    except ImportError:  # pragma: no cover - pillow ships with the runtime extra
        pass
    return tuple(types)


_INPUT_ERRORS = _input_error_types()


def _explains_row(headers: Mapping[str, str]) -> bool:
    """Headers asking for an explanation, as the built-in ``handle`` reads them."""
    return headers.get("explain") == "True"


def _explains(pending: Pending) -> bool:
    return _explains_row(pending.headers)


def _use_torch_threads(threads: int) -> None:
    """``threads`` intra-op threads for torch work on the calling (handler) thread from now on.

    The count is the thread's own (OpenMP's ``nthreads-var`` is per thread; at::set_num_threads sets it on
    the calling thread), but a thread's first torch use sets it from the count last set by any thread
    (aten/src/ATen/ParallelOpenMP.cpp: ``lazy_init_num_threads``, once per thread): reading the count
    first makes that first use happen before, not after, this thread's own setting."""
    import torch  # loaded with the model already

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _succeeded(pending: Pending) -> bool:
    future = pending.future
    return future.done() and not future.cancelled() and future.exception() is None


class ModelRunner:
    def __init__(self, name: str, settings: ModelSettings, *, version: str = "1.0") -> None:
        self.name = name
        self.version = version
        self.settings = settings
        self.state = LOADING
        self.error: str | None = None
        self.model: LoadedModel | None = None
        self.platform = "pytorch"
        self._merge = False
        # The handler calls' measured cost: merged calls' size, and (once the server says how many CPUs
        # the model may use, :meth:`share_cpus`) each call's intra-op threads and how many run at once.
        self.costs = CallCosts(base_threads=1, most_rows=MERGED_MAX_ROWS, workers=settings.workers)
        # One thread per stream, each running one handler call at a time; the calls running: stream ->
        # the threads it holds (batching/streams.py), under the plan of the last call started.
        self._executors: list[ThreadPoolExecutor] = []
        self._handlers: dict[int, tuple[Any, EntryPoint]] = {}
        self._running: dict[int, int] = {}
        self._plan = CallPlan(1, settings.workers, 1)
        self._exclusive_waiting = 0  # run_in_worker calls waiting for every stream to be free
        self._released: asyncio.Event | None = None
        # Awaited by stop(), before the executors go: other batchers of this model (explanations).
        self.stop_hooks: list[Callable[[], Awaitable[None]]] = []
        self.batcher = Batcher(
            self._run_batch,
            max_rows=settings.batch_size,
            max_delay=settings.max_batch_delay_ms / 1000.0,
            workers=settings.workers,
            may_start=self._may_start,
        )

    @property
    def ready(self) -> bool:
        return self.state == READY

    @property
    def handler(self) -> Any:
        """The handler instance (or module) of the loaded model, for explanations."""
        return None if self.model is None else self.model.handler

    def set_loaded(self, model: LoadedModel) -> None:
        from .handlers.copies import runs_concurrently  # imports torch: on the loader thread

        self.model = model
        self.version = model.version
        self._handlers = {0: (model.handler, model.entry_point)}
        self.costs.streams_allowed = runs_concurrently(model.handler, model.merge_plan)
        if self.settings.batch_size == 1 and model.merge_plan is not None:
            # Requests queued while a call runs go together into the next one; never waited for.
            self._merge = True
            self.batcher.max_delay = 0.0
            self.batcher.max_rows = self.costs.merged_rows()
        self.state = READY
        self.error = None

    @property
    def merging(self) -> bool:
        """Whether requests are merged into one handler call although ``batchSize`` is 1."""
        return self._merge

    def stop_merging(self) -> None:
        self._merge = False
        self.batcher.max_rows = 1

    def share_cpus(self, threads: int, most: int | None) -> None:
        """The server configured ``threads`` intra-op threads; a compute-bound model's calls may use up
        to ``most`` when that measures faster, and run on several streams while requests wait
        (batching/costs.py); ``most`` None: the user fixed the count."""
        self.costs = CallCosts(
            base_threads=threads,
            most_threads=most,
            most_rows=MERGED_MAX_ROWS,
            streams_allowed=self.costs.streams_allowed,
            workers=self.settings.workers,
        )
        self._plan = CallPlan(threads, self.settings.workers, threads)

    def set_failed(self, message: str) -> None:
        self.state = FAILED
        self.error = message

    def check_ready(self) -> None:
        if self.state == LOADING:
            raise NotReady(f"model {self.name} is still loading")
        if self.state == FAILED:
            raise NotReady(f"model {self.name} failed to load: {self.error}")

    async def predict(
        self,
        rows: Sequence[Any],
        headers: Mapping[str, str],
        request_id: str,
        *,
        exclusive: bool = False,
    ) -> list[Any]:
        """One answer per row. ``exclusive`` runs the request as a batch of its own (explanations).

        Raises :class:`ApiError` (400 for input the handler rejected, 500 for handler failures, 503
        when not loaded, 504 after ``responseTimeout``)."""
        self.check_ready()
        future = self.batcher.submit(rows, headers, request_id, exclusive=exclusive)
        try:
            return await asyncio.wait_for(future, self.settings.response_timeout_s)
        except TimeoutError:
            raise ResponseTimeout(
                f"model {self.name} did not answer within {self.settings.response_timeout_s:g} s"
            ) from None

    async def run_in_worker(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(*args)`` on this model's first stream, off the event loop, once no handler call
        runs and with none starting meanwhile (an explanation has the cores to itself, as it had when
        calls ran one at a time)."""
        self.check_ready()
        self._exclusive_waiting += 1
        try:
            while self._running:
                if self._released is None:
                    self._released = asyncio.Event()
                self._released.clear()
                await self._released.wait()
        finally:
            self._exclusive_waiting -= 1
        self._running[0] = self._plan.cores
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor(0), function, *args)
        finally:
            self._release(0)
            self.batcher.wake()

    def _executor(self, stream: int) -> ThreadPoolExecutor:
        while len(self._executors) <= stream:
            index = len(self._executors)
            self._executors.append(ThreadPoolExecutor(1, thread_name_prefix=f"model-{self.name}-{index}"))
        return self._executors[stream]

    def _stream_handler(self, stream: int) -> tuple[Any, EntryPoint]:
        """The handler instance and entry point of ``stream``: the loaded one on stream 0, a copy of it on
        the others when the handler runs on several streams, else the same one (the user's workers)."""
        found = self._handlers.get(stream)
        if found is None:
            handler, entry_point = self._handlers[0]
            if self.costs.streams_allowed:
                from .handlers.copies import stream_copy

                handler = stream_copy(handler)
                entry_point = handler.handle
            found = self._handlers[stream] = (handler, entry_point)
        return found

    def _may_start(self) -> bool:
        """Whether the batcher may start another call now (batching/streams.py)."""
        return not self._exclusive_waiting and may_start(self._running.values(), self._plan)

    def _claim(self) -> tuple[int, Call]:
        """The stream and the threads of the call starting now (on the event loop, right after the batcher
        took its batch: the requests still queued say whether it is alone)."""
        self._plan, call = self.costs.start_call(list(self._running.values()), self.batcher.queue_length)
        stream = next(i for i in range(len(self._running) + 1) if i not in self._running)
        self._running[stream] = call.claim
        return stream, call

    def _release(self, stream: int) -> None:
        del self._running[stream]
        if self._released is not None:
            self._released.set()

    def run_handler(
        self,
        rows: list[Any],
        headers: Sequence[Mapping[str, str]],
        request_ids: Sequence[str],
        sizes: Sequence[int] = (),
        *,
        stream: tuple[Any, EntryPoint] | None = None,
        threads: int | None = None,
    ) -> tuple[list[Any], list[tuple[int, str | None]], float]:
        """Call the handler on one batch (on a stream's thread); answers, per-row (status, phrase) and the
        handler's seconds. ``sizes``: the rows of each request, when requests of a ``batchSize`` 1 model
        are merged; ``stream``: its handler and entry point (default: the loaded ones); ``threads``: the
        intra-op threads to set on this thread first (None: leave them)."""
        assert self.model is not None
        handler, entry_point = stream or (self.model.handler, self.model.entry_point)
        if threads is not None:
            _use_torch_threads(threads)
        started = time.perf_counter()
        if len(sizes) > 1 and self.model.merge_plan is not None:
            from .handlers.merging import request_contexts, run_merged

            context, contexts = request_contexts(self.model.context, headers, request_ids, sizes)
            answers = run_merged(handler, self.model.merge_plan, context, contexts, rows, sizes)
        else:
            context = self.model.context.for_batch(headers, request_ids)
            answers = entry_point(rows, context)
        if answers is None or isinstance(answers, str | bytes | dict) or not hasattr(answers, "__len__"):
            raise ApiError(f"the handler of model {self.name} returned {type(answers).__name__}, not a list")
        answers = list(answers)
        if len(answers) != len(rows):
            raise ApiError(
                f"the handler of model {self.name} returned {len(answers)} answers for {len(rows)} inputs"
            )
        statuses = [(p.status_code, p.status_phrase) for p in context.request_processor]
        return answers, statuses, time.perf_counter() - started

    def _record(self, call: Call, rows: int, seconds: float) -> None:
        """A successful call's cost into :attr:`costs` (on the event loop), logging a changed choice."""
        costs = self.costs
        chosen = (costs.best_threads(), costs.streams_win())
        costs.record(call.threads, rows, seconds, stream=call.stream)
        if len(costs.choices) == 1 or (costs.best_threads(), costs.streams_win()) == chosen:
            return
        costs_ms = ", ".join(f"{t}: {s * 1000:.1f}" for t, s in sorted(costs.row_seconds.items()))
        if costs.stream_row_seconds is not None:
            costs_ms += f"; {costs.stream_count} streams: {costs.stream_row_seconds * 1000:.1f}"
        log.info(
            "model %s: lone calls use %d intra-op threads, waiting requests %s from now on "
            "(ms a row by threads: %s)",
            self.name,
            costs.best_threads(),
            f"{costs.stream_count} calls at once" if costs.streams_win() else "one call",
            costs_ms,
        )

    def _error(self, exc: BaseException) -> ApiError:
        if isinstance(exc, ApiError):
            return exc
        if isinstance(exc, _INPUT_ERRORS):
            return InputError(f"{exc}")
        log.error("model %s: handler failed", self.name, exc_info=exc)
        return ApiError(f"model {self.name} failed: {type(exc).__name__}: {exc}")

    async def _run_batch(self, batch: list[Pending]) -> None:
        rows: list[Any] = []
        headers: list[Mapping[str, str]] = []
        request_ids: list[str] = []
        for pending in batch:
            rows.extend(pending.rows)
            headers.extend([pending.headers] * len(pending.rows))
            request_ids.extend([pending.request_id] * len(pending.rows))
        merged = self.merging and len(batch) > 1
        if merged and any(_explains(p) for p in batch):
            for pending in batch:  # handle() reads the first request's headers: one request per call
                await self._run_batch([pending])
            return
        sizes = [len(p.rows) for p in batch] if merged else ()
        loop = asyncio.get_running_loop()
        started = loop.time()
        stream, call = self._claim()
        failure: Exception | None = None
        try:
            answers, statuses, seconds = await loop.run_in_executor(
                self._executor(stream),
                functools.partial(
                    self.run_handler,
                    rows,
                    headers,
                    request_ids,
                    sizes,
                    stream=self._stream_handler(stream),
                    threads=call.threads if self.costs.chooses_threads else None,
                ),
            )
        except Exception as exc:  # the handler's failure, whatever it is, must not stop the batcher
            failure = exc
        finally:  # also when cancelled (the server stops); before the retries below claim a stream again
            self._release(stream)
        if failure is not None:
            self._observe(batch, len(rows), loop.time() - started, ok=False)
            if len(batch) > 1:
                # Isolate the culprit: each request of the failed batch runs again on its own.
                for pending in batch:
                    await self._run_batch([pending])
                if merged and all(_succeeded(p) for p in batch):
                    log.warning(
                        "model %s: a merged call failed (%s) where each request alone succeeds; "
                        "requests run one at a time from now on, as batchSize 1 says",
                        self.name,
                        failure,
                    )
                    self.stop_merging()
                return
            if not batch[0].future.done():
                batch[0].future.set_exception(self._error(failure))
            return
        self._observe(batch, len(rows), loop.time() - started, ok=True)
        if not any(_explains(p) for p in batch):  # an explanation's cost is not a prediction's
            self._record(call, len(rows), seconds)
            self.batcher.set_workers(max(self.settings.workers, self.costs.stream_count))
        if self._merge:
            self.batcher.max_rows = self.costs.merged_rows()
        start = 0
        for pending in batch:
            end = start + len(pending.rows)
            if not pending.future.done():
                failed = next((s for s in statuses[start:end] if s[0] >= 400), None)
                if failed is not None:
                    message = failed[1] or str(answers[start])
                    pending.future.set_exception(ApiError(message, failed[0]))
                else:
                    pending.future.set_result(answers[start:end])
            start = end

    def _observe(self, batch: list[Pending], rows: int, seconds: float, *, ok: bool) -> None:
        get_observer().batch_finished(
            model=self.name,
            rows=rows,
            requests=len(batch),
            queue_seconds=[p.started - p.enqueued for p in batch],
            inference_seconds=seconds,
            ok=ok,
        )

    async def stop(self) -> None:
        for hook in self.stop_hooks:
            await hook()
        await self.batcher.stop()
        for executor in self._executors:
            executor.shutdown(wait=False, cancel_futures=True)
