"""One served model: its load state, its batcher, and the thread(s) its handler runs on.

``ModelRunner.predict(rows, headers, request_id)`` is the whole interface the protocols use: rows in
TorchServe's shape (dicts with ``data``/``body``), one answer per row out. Handlers run on the
runner's own thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .batching import Batcher, Pending
from .batching.costs import CallCosts
from .config import ModelSettings
from .errors import ApiError, InputError, NotReady, ResponseTimeout
from .loader import LoadedModel
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
    """``threads`` intra-op threads for torch work on the calling (handler) thread from now on."""
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
        # the model may use, :meth:`share_cpus`) each call's intra-op threads.
        self.costs = CallCosts(base_threads=1, most_rows=MERGED_MAX_ROWS)
        self._executor = ThreadPoolExecutor(settings.workers, thread_name_prefix=f"model-{name}")
        # Awaited by stop(), before the executor goes: other batchers of this model (explanations).
        self.stop_hooks: list[Callable[[], Awaitable[None]]] = []
        self.batcher = Batcher(
            self._run_batch,
            max_rows=settings.batch_size,
            max_delay=settings.max_batch_delay_ms / 1000.0,
            workers=settings.workers,
        )

    @property
    def ready(self) -> bool:
        return self.state == READY

    @property
    def handler(self) -> Any:
        """The handler instance (or module) of the loaded model, for explanations."""
        return None if self.model is None else self.model.handler

    def set_loaded(self, model: LoadedModel) -> None:
        self.model = model
        self.version = model.version
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
        to ``most`` when that measures faster (batching/costs.py); ``most`` None: the user fixed the count."""
        self.costs = CallCosts(base_threads=threads, most_threads=most, most_rows=MERGED_MAX_ROWS)

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
        """Run ``function(*args)`` on this model's inference thread(s), off the event loop."""
        self.check_ready()
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def run_handler(
        self,
        rows: list[Any],
        headers: Sequence[Mapping[str, str]],
        request_ids: Sequence[str],
        sizes: Sequence[int] = (),
    ) -> tuple[list[Any], list[tuple[int, str | None]]]:
        """Call the handler on one batch (on a worker thread); answers and per-row (status, phrase).
        ``sizes``: the rows of each request, when requests of a ``batchSize`` 1 model are merged."""
        assert self.model is not None
        costs = self.costs
        threads = costs.threads_for_call()
        if len(costs.choices) > 1:
            _use_torch_threads(threads)
        started = time.perf_counter()
        if len(sizes) > 1 and self.model.merge_plan is not None:
            from .handlers.merging import request_contexts, run_merged

            context, contexts = request_contexts(self.model.context, headers, request_ids, sizes)
            answers = run_merged(self.model.handler, self.model.merge_plan, context, contexts, rows, sizes)
        else:
            context = self.model.context.for_batch(headers, request_ids)
            answers = self.model.entry_point(rows, context)
        if answers is None or isinstance(answers, str | bytes | dict) or not hasattr(answers, "__len__"):
            raise ApiError(f"the handler of model {self.name} returned {type(answers).__name__}, not a list")
        answers = list(answers)
        if len(answers) != len(rows):
            raise ApiError(
                f"the handler of model {self.name} returned {len(answers)} answers for {len(rows)} inputs"
            )
        if not any(_explains_row(h) for h in headers):  # an explanation's cost is not a prediction's
            chosen = costs.best_threads()
            costs.record(threads, len(rows), time.perf_counter() - started)
            if len(costs.choices) > 1 and costs.best_threads() != chosen:
                log.info(
                    "model %s: calls use %d intra-op threads from now on (ms a row by threads: %s)",
                    self.name,
                    costs.best_threads(),
                    ", ".join(f"{t}: {s * 1000:.1f}" for t, s in sorted(costs.row_seconds.items())),
                )
        statuses = [(p.status_code, p.status_phrase) for p in context.request_processor]
        return answers, statuses

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
        try:
            answers, statuses = await loop.run_in_executor(
                self._executor, self.run_handler, rows, headers, request_ids, sizes
            )
        except Exception as exc:  # the handler's failure, whatever it is, must not stop the batcher
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
                        exc,
                    )
                    self.stop_merging()
                return
            if not batch[0].future.done():
                batch[0].future.set_exception(self._error(exc))
            return
        self._observe(batch, len(rows), loop.time() - started, ok=True)
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
        self._executor.shutdown(wait=False, cancel_futures=True)
