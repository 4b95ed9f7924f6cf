"""Explanations for one served model: who computes them, batching, and running them off the event loop.

Who computes an explanation (:func:`strategy`):

- ``handle``: the handler has its own ``explain_handle`` (or is a TorchServe handler with
  ``get_insights``): it is called as TorchServe calls it, through ``handle`` with the request header
  ``explain: True``, each request as a batch of its own. Its answer is returned as it is.
- ``insights``: the handler builds on this runtime's handlers and defines only ``get_insights(tensor,
  data, target)``: it is called once per instance with that instance's own target.
- ``captum``: everything else with a ``model`` and a ``preprocess``: integrated gradients over the
  preprocessed input (:mod:`.attribution`), one Captum call for all instances of a batch that share
  the same options, each instance with its own target (its ``"target"``, else the predicted class).

Explanation requests have a batcher of their own (the model's batchSize and maxBatchDelay), and run on
the model's inference threads like predictions. An explanation is 2 x n_steps passes of work where a
prediction is one, so when it finds the model otherwise idle (one worker, no prediction queued) it runs with
intra-op threads on every CPU (:func:`explain_threads`) rather than the CPUs-minus-one predictions
keep to leave the event loop a core; the thread setting is the worker thread's own and is restored
after the explanation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import types
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..batching import Batcher, Pending
from ..cpus import available_cpus
from ..errors import ApiError, InputError, ResponseTimeout
from ..handlers.base import row_payload
from ..runner import ModelRunner
from .settings import ExplainOptions, ExplainSettings

log = logging.getLogger("isvc_runtime.explain")

HANDLE, INSIGHTS, CAPTUM = "handle", "insights", "captum"


@dataclass(frozen=True, slots=True)
class ExplainRow:
    """One instance to explain: the handler's row, its target (None: the predicted class), options."""

    row: Any
    target: int | None
    options: ExplainOptions


def _generic_explain_handles() -> set[Any]:
    """``explain_handle`` implementations that only dispatch to ``get_insights`` (or refuse)."""
    from ..handlers.base import BaseHandler

    generic = {BaseHandler.explain_handle}
    ts_base = sys.modules.get("ts.torch_handler.base_handler")
    if ts_base is not None and hasattr(ts_base, "BaseHandler"):
        generic.add(ts_base.BaseHandler.explain_handle)
    return generic


def strategy(handler: Any) -> str | None:
    """How ``handler`` explains (see the module's docstring), or None when it cannot."""
    if handler is None:
        return None
    if isinstance(handler, types.ModuleType):  # a module-level handle(data, context)
        return HANDLE if callable(getattr(handler, "explain_handle", None)) else None
    explain_handle = getattr(type(handler), "explain_handle", None)
    generic = _generic_explain_handles()
    if explain_handle is not None and explain_handle not in generic:
        return HANDLE
    if callable(getattr(handler, "get_insights", None)):
        from ..handlers.base import BaseHandler

        return INSIGHTS if isinstance(handler, BaseHandler) else HANDLE
    model = getattr(handler, "model", None)
    if callable(model) and callable(getattr(handler, "preprocess", None)):
        return CAPTUM
    return None


def explain_threads(
    current: int, cpus: int, workers: int, idle: bool, pinned: bool, configured: int | None = None
) -> int:
    """Intra-op threads for one explanation: ``configured`` when the model's explain settings name a
    count; else every CPU when the model is otherwise idle (one worker, no prediction queued) and its
    thread count is the server's default (CPUs minus one), else ``current``. ``pinned``: the
    operator fixed the thread count (OMP_NUM_THREADS), which is kept.

    Measured on 2 CPUs (MNIST, 15 steps): 7.9 ms with 1 thread, 4.6-5.4 ms with 2 on a quiet
    machine; but with other processes on both cores a 2-thread pass waits on a descheduled thread
    (p90 above 100 ms): ``threads: 1`` in the model's explain settings opts out."""
    if configured is not None:
        return configured
    if pinned or not idle or workers != 1:
        return current
    if current != max(1, cpus - 1):  # set by --torch-threads, not the server's default: kept
        return current
    return max(current, cpus)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """``threads`` intra-op threads on the calling thread for the block, the previous count after."""
    import torch

    previous = torch.get_num_threads()
    if threads == previous:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class Explainer:
    """The explanation side of one :class:`ModelRunner`."""

    def __init__(self, runner: ModelRunner) -> None:
        self.runner = runner
        self.settings: ExplainSettings = runner.settings.explain
        self.classes: int | None = None  # the model's output width, known after its first forward
        # Read once, as the server sizes its thread pools once: the cgroup files cost ~0.2 ms a read.
        self.cpus = available_cpus()
        self._strategy: tuple[Any, str | None] | None = None  # (handler, its strategy), see strategy()
        settings = runner.settings
        self.batcher = Batcher(
            self._run_batch,
            max_rows=settings.batch_size,
            max_delay=settings.max_batch_delay_ms / 1000.0,
            workers=settings.workers,
        )

    def strategy(self) -> str:
        handler = self.runner.handler
        if self._strategy is None or self._strategy[0] is not handler:  # a reload brings a new handler
            self._strategy = (handler, strategy(handler))
        found = self._strategy[1]
        if found is None:
            raise InputError(f"model {self.runner.name} does not support explanations")
        return found

    async def explain(
        self, rows: Sequence[ExplainRow], headers: Mapping[str, str], request_id: str
    ) -> list[Any]:
        """One explanation per row (ApiError for a bad request or a failing handler)."""
        self.runner.check_ready()
        if self.strategy() == HANDLE:
            return await self.runner.predict(
                [r.row for r in rows], {**headers, "explain": "True"}, request_id, exclusive=True
            )
        future = self.batcher.submit(rows, headers, request_id)
        timeout = self.runner.settings.response_timeout_s
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise ResponseTimeout(f"model {self.runner.name} did not explain within {timeout:g} s") from None

    async def _run_batch(self, batch: list[Pending]) -> None:
        requests = [list(p.rows) for p in batch]
        try:
            answers = await self.runner.run_in_worker(self.explain_requests, requests)
        except Exception as exc:  # whatever the handler raised must not stop the batcher
            if len(batch) > 1:  # isolate the culprit: each request runs again on its own
                for pending in batch:
                    await self._run_batch([pending])
                return
            if not batch[0].future.done():
                batch[0].future.set_exception(self.runner._error(exc))
            return
        for pending, answer in zip(batch, answers, strict=True):
            if pending.future.done():
                continue
            if isinstance(answer, BaseException):
                pending.future.set_exception(self.runner._error(answer))
            else:
                pending.future.set_result(answer)

    def explain_requests(self, requests: list[list[ExplainRow]]) -> list[list[Any] | BaseException]:
        """On an inference thread: one list of explanations per request, or that request's error."""
        import torch

        # Queued explanations do not make the model busy: they run one after another on this same
        # worker, so they never compete with this one for the CPUs (measured on 2 CPUs, 4 concurrent
        # explain clients: p50 40 ms when they dropped the count to 1 thread, see bench/results.md).
        idle = self.runner.batcher.queue_length == 0
        threads = explain_threads(
            torch.get_num_threads(),
            self.cpus,
            self.runner.settings.workers,
            idle,
            pinned="OMP_NUM_THREADS" in os.environ,
            configured=self.settings.threads,
        )
        with torch_threads(threads):
            return self._explain_requests(requests)

    def _explain_requests(self, requests: list[list[ExplainRow]]) -> list[list[Any] | BaseException]:
        import torch

        from .attribution import attribute, forward_scores, resolve_layer

        handler = self.runner.handler
        flat = [row for request in requests for row in request]
        inputs = handler.preprocess([r.row for r in flat])
        if not isinstance(inputs, torch.Tensor) or inputs.ndim == 0 or inputs.shape[0] != len(flat):
            raise ApiError(
                f"the handler of model {self.runner.name} must preprocess {len(flat)} instances into a "
                "tensor with one row per instance for explanations"
            )
        model = handler.model
        targets = [r.target for r in flat]
        if self.classes is None or any(t is None for t in targets):
            scores = forward_scores(model, inputs)
            self.classes = int(scores.shape[1])
            predicted = scores.argmax(dim=1).tolist()
            targets = [p if t is None else t for t, p in zip(targets, predicted, strict=True)]
        answers: list[list[Any] | BaseException] = []
        wanted: list[int] = []  # rows of the requests whose targets are in range
        start = 0
        for request in requests:
            end = start + len(request)
            bad = next((i for i in range(start, end) if targets[i] >= self.classes), None)
            if bad is None:
                wanted.extend(range(start, end))
                answers.append([None] * len(request))
            else:
                answers.append(
                    InputError(
                        f"instance {bad - start}: target {targets[bad]} is out of range: "
                        f"model {self.runner.name} has {self.classes} classes (0 to {self.classes - 1})"
                    )
                )
            start = end
        explanations: dict[int, Any] = {}
        if self.strategy() == INSIGHTS:
            for i in wanted:
                insight = handler.get_insights(inputs[i : i + 1], row_payload(flat[i].row), targets[i])
                if isinstance(insight, list | tuple | torch.Tensor) and len(insight) == 1:
                    insight = insight[0]
                explanations[i] = insight
        else:
            layer_name = self.settings.layer or getattr(handler, "explain_layer", None)
            layer = resolve_layer(model, layer_name) if layer_name else None
            by_options: dict[ExplainOptions, list[int]] = {}
            for i in wanted:
                by_options.setdefault(flat[i].options, []).append(i)
            for options, rows in by_options.items():
                index = torch.tensor(rows, device=inputs.device)
                attributions = attribute(
                    model,
                    inputs.index_select(0, index) if len(rows) < len(flat) else inputs,
                    [targets[i] for i in rows],
                    options,
                    baseline=self.settings.baseline,
                    layer=layer,
                )
                array = attributions.to("cpu", torch.float32).numpy()
                for position, i in enumerate(rows):
                    explanations[i] = array[position]
        start = 0
        for answer, request in zip(answers, requests, strict=True):
            if isinstance(answer, list):
                answer[:] = [explanations[i] for i in range(start, start + len(request))]
            start += len(request)
        return answers

    async def stop(self) -> None:
        await self.batcher.stop()


_explainers: weakref.WeakKeyDictionary[ModelRunner, Explainer] = weakref.WeakKeyDictionary()


def explainer_for(runner: ModelRunner) -> Explainer:
    explainer = _explainers.get(runner)
    if explainer is None:
        explainer = _explainers[runner] = Explainer(runner)
        runner.stop_hooks.append(explainer.stop)
    return explainer
