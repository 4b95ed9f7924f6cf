"""Requests merged into one handler call under ``batchSize`` 1, only where the handler's own code cannot
tell: the built-in steps take every waiting request's rows, the archive's ``postprocess`` still gets one
request at a time, and a model that cannot take a batch is answered one request at a time again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import torch
from isvc_runtime.context import Context
from isvc_runtime.handler_metrics import HandlerMetrics
from isvc_runtime.handlers.image_classifier import ImageClassifier
from isvc_runtime.handlers.merging import MergePlan, merge_plan, request_contexts, run_merged
from isvc_runtime.handlers.tensor import TensorHandler
from isvc_runtime.runner import ModelRunner
from mnist_handler import MNISTDigitClassifier
from runtime_support import ASSETS, loaded_runner
from support.modules import load_module


class Doubler(torch.nn.Module):
    """Doubles its input and records the batch sizes it was called with; with ``single_only``, fails
    on more than one row, as a model written for batch size 1 may."""

    def __init__(self, *, single_only: bool = False) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.single_only = single_only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        if self.single_only and x.shape[0] > 1:
            raise RuntimeError("expected a batch of 1")
        return x * 2


class OwnPostprocess(TensorHandler):
    """An archive's handler adding only ``postprocess``: records what each call received."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[list[list[float]], list[str]]] = []

    def postprocess(self, data: torch.Tensor) -> list[Any]:
        ids = [self.context.get_request_id(i) for i in range(len(data))]
        self.received.append((data.tolist(), ids))
        if (data < 0).any():
            self.context.set_response_status(422, "negative")
        return [row[0] for row in data.tolist()]


class OwnPreprocess(TensorHandler):
    def preprocess(self, data: list[Any]) -> torch.Tensor:
        return super().preprocess(data)


class OwnHelper(ImageClassifier):
    def decode_row(self, value: Any) -> torch.Tensor:
        return super().decode_row(value)


def test_built_in_handlers_take_merged_calls_whole() -> None:
    assert merge_plan(ImageClassifier()) == MergePlan(per_request_postprocess=False)
    assert merge_plan(TensorHandler()) == MergePlan(per_request_postprocess=False)


def test_a_handler_adding_only_postprocess_is_merged_with_postprocess_per_request() -> None:
    assert merge_plan(MNISTDigitClassifier()) == MergePlan(per_request_postprocess=True)
    assert merge_plan(OwnPostprocess()) == MergePlan(per_request_postprocess=True)


@pytest.mark.parametrize(
    "handler",
    [OwnPreprocess(), OwnHelper(), load_module(ASSETS / "batch_report_handler.py").BatchReportHandler()],
    ids=["own preprocess", "own per-row helper", "own preprocess and postprocess"],
)
def test_a_handler_with_more_code_of_its_own_is_never_merged(handler: Any) -> None:
    assert merge_plan(handler) is None


def test_handlers_that_are_not_built_in_classes_are_never_merged() -> None:
    assert merge_plan(load_module(ASSETS / "function_handler.py")) is None
    assert merge_plan(object()) is None


def _context() -> Context:
    return Context("m", "/nowhere", {}, 1, None, HandlerMetrics("m"))


def test_each_request_gets_its_own_rows_and_context_in_postprocess() -> None:
    handler = OwnPostprocess()
    handler.model = Doubler()
    rows = [{"data": [1.0]}, {"data": [2.0]}, {"data": [-3.0]}, {"data": [4.0]}]
    sizes = [1, 2, 1]
    ids = ["a", "b", "b", "c"]
    merged, contexts = request_contexts(_context(), [{}] * 4, ids, sizes)
    answers = run_merged(handler, MergePlan(per_request_postprocess=True), merged, contexts, rows, sizes)
    assert answers == [2.0, 4.0, -6.0, 8.0]
    assert handler.model.batches == [4]
    assert handler.received == [([[2.0]], ["a"]), ([[4.0], [-6.0]], ["b", "b"]), ([[8.0]], ["c"])]
    # the status the second request's postprocess reported is that request's, in the merged call's order
    assert [(p.status_code, p.status_phrase) for p in merged.request_processor] == [
        (200, None),
        (422, "negative"),
        (200, None),
        (200, None),
    ]


def _runner(handler: Any) -> ModelRunner:
    runner: ModelRunner = loaded_runner(handler)
    return runner


def _three_at_once(runner: ModelRunner) -> list[list[Any]]:
    async def scenario() -> list[list[Any]]:
        try:
            return await asyncio.gather(
                *(runner.predict([{"data": [v]}], {}, f"r{v}") for v in (1.0, 2.0, 3.0))
            )
        finally:
            await runner.stop()

    return asyncio.run(scenario())


def test_requests_waiting_together_share_one_call_of_a_mergeable_handler() -> None:
    handler = OwnPostprocess()
    handler.model = Doubler()
    assert _three_at_once(_runner(handler)) == [[2.0], [4.0], [6.0]]
    assert handler.model.batches == [3]
    assert [received for received, _ in handler.received] == [[[2.0]], [[4.0]], [[6.0]]]


def test_requests_of_a_handler_with_its_own_preprocess_run_one_at_a_time() -> None:
    handler = OwnPreprocess()
    handler.model = Doubler()
    assert _three_at_once(_runner(handler)) == [[[2.0]], [[4.0]], [[6.0]]]
    assert handler.model.batches == [1, 1, 1]


def test_a_model_that_fails_on_a_merged_call_is_answered_one_request_at_a_time_from_then_on() -> None:
    handler = OwnPostprocess()
    handler.model = Doubler(single_only=True)
    runner = _runner(handler)
    assert runner.merging
    assert _three_at_once(runner) == [[2.0], [4.0], [6.0]]
    assert handler.model.batches == [3, 1, 1, 1]
    assert not runner.merging
