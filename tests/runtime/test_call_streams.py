"""Several handler calls at once for a compute-bound model: two one-thread calls while requests wait, one call
on every core for a lone request, chosen by measurement; one call at a time wherever that is not safe or not
chosen (a cheap model, a handler with code of its own, a thread count fixed by the user)."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from isvc_runtime.batching.costs import (
    COMPUTE_BOUND_ROW_S,
    EXPLORE_MOST,
    MARGIN,
    MERGED_ROWS_FLOOR,
    CallCosts,
    stream_layout,
)
from isvc_runtime.batching.streams import Call, CallPlan, may_start, next_call
from isvc_runtime.config import ModelSettings
from isvc_runtime.handlers.copies import runs_concurrently, stream_copy
from isvc_runtime.handlers.merging import merge_plan
from isvc_runtime.handlers.tensor import TensorHandler
from isvc_runtime.runner import ModelRunner, _use_torch_threads
from runtime_support import loaded_runner

TWO_CORES = CallPlan(lone_threads=2, streams=2, stream_threads=1)
RESNET_ONE_THREAD_ROW_S = 0.061  # ResNet-18, one image, one thread (bench/results.md)
RESNET_TWO_THREADS_ROW_S = 0.034


# -- the rules: which call may start, on how many threads ----------------------------------------------


def test_a_lone_request_gets_every_core_and_holds_them_while_it_runs() -> None:
    call = next_call([], 0, TWO_CORES)
    assert call == Call(threads=2, claim=2, stream=False)
    assert not may_start([call.claim], TWO_CORES)


def test_requests_waiting_behind_a_call_start_two_one_thread_calls_and_no_third() -> None:
    first = next_call([], 3, TWO_CORES)
    assert first == Call(threads=1, claim=1, stream=True)
    assert may_start([first.claim], TWO_CORES)
    second = next_call([first.claim], 2, TWO_CORES)
    assert second == Call(threads=1, claim=1, stream=True)
    assert not may_start([first.claim, second.claim], TWO_CORES)


def test_a_request_arriving_while_a_one_thread_call_runs_gets_the_free_core_only() -> None:
    assert next_call([1], 0, TWO_CORES) == Call(threads=1, claim=1, stream=True)


def test_with_one_stream_calls_run_one_after_another() -> None:
    for plan in (CallPlan(lone_threads=1), CallPlan(lone_threads=2)):
        call = next_call([], 5, plan)
        assert call == Call(threads=plan.lone_threads, claim=plan.lone_threads, stream=False)
        assert not may_start([call.claim], plan)


def test_explicit_workers_run_that_many_calls_at_once_on_the_servers_threads() -> None:
    workers = CallPlan(lone_threads=1, streams=3, stream_threads=1)
    running: list[int] = []
    for waiting in (0, 0, 0):
        assert may_start(running, workers)
        call = next_call(running, waiting, workers)
        assert call.threads == 1
        running.append(call.claim)
    assert not may_start(running, workers)


def test_a_call_started_beside_another_never_takes_more_than_the_cores_left() -> None:
    # the plan changed to one call on every core while a stream call still runs (a failed call's retry)
    assert next_call([1], 0, CallPlan(lone_threads=2)) == Call(threads=1, claim=1, stream=True)


# -- the choice, measured --------------------------------------------------------------------------------


def _measured(costs: CallCosts, lone: dict[int, float], stream_row_s: float, calls: int) -> list[CallPlan]:
    """``calls`` calls, each lone or a stream call as the plan and a queue of requests say, costing what
    ``lone`` (per thread count) and ``stream_row_s`` say; the plans they ran under."""
    plans = []
    for _ in range(calls):
        plan, call = costs.start_call([], 8)  # requests wait: a stream call where the plan has streams
        plans.append(plan)
        costs.record(call.threads, 1, stream_row_s if call.stream else lone[call.threads], stream=call.stream)
    return plans


def _compute_bound(streams_allowed: bool = True, most: int | None = 2) -> CallCosts:
    costs = CallCosts(base_threads=1, most_threads=most, streams_allowed=streams_allowed)
    for _ in range(3):  # the base count, then every core, measured on lone calls
        threads = costs.threads_for_call()
        costs.record(threads, 1, {1: RESNET_ONE_THREAD_ROW_S, 2: RESNET_TWO_THREADS_ROW_S}[threads])
    assert costs.compute_bound and costs.best_threads() == (2 if most == 2 else 1)
    return costs


def test_a_compute_bound_model_runs_waiting_requests_on_two_one_thread_calls() -> None:
    costs = _compute_bound()
    assert costs.plan() == TWO_CORES
    plans = _measured(costs, {1: 0.061, 2: 0.034}, stream_row_s=0.064, calls=100)
    assert costs.streams_win()
    assert plans.count(TWO_CORES) >= 95  # one call on every core re-measured now and then, ever more rarely


def test_waiting_requests_go_to_one_call_on_every_core_where_that_measures_clearly_faster() -> None:
    costs = _compute_bound()
    # two one-thread calls at once that each take far longer than twice a two-thread call
    slow_streams = 2 * MARGIN * 0.034 * 1.1
    plans = _measured(costs, {1: 0.061, 2: 0.034}, stream_row_s=slow_streams, calls=EXPLORE_MOST)
    assert not costs.streams_win()
    assert plans[-1].streams == 1
    assert 1 <= sum(p.streams == 2 for p in plans[5:]) <= 10  # streams re-measured, ever more rarely


def test_streams_that_measure_only_somewhat_slower_are_kept() -> None:
    costs = _compute_bound()
    _measured(costs, {1: 0.061, 2: 0.034}, stream_row_s=2 * 0.034 * MARGIN * 0.95, calls=50)
    assert costs.streams_win()


def test_a_cheap_model_runs_one_call_at_a_time() -> None:
    costs = CallCosts(base_threads=1, most_threads=2, streams_allowed=True)
    _measured(costs, {1: COMPUTE_BOUND_ROW_S / 10, 2: COMPUTE_BOUND_ROW_S / 20}, COMPUTE_BOUND_ROW_S / 10, 50)
    assert costs.stream_count == 1
    assert costs.plan() == CallPlan(lone_threads=1)


def test_a_handler_that_may_not_run_twice_at_once_runs_one_call_at_a_time() -> None:
    costs = _compute_bound(streams_allowed=False)
    assert costs.plan() == CallPlan(lone_threads=2)


def test_a_thread_count_fixed_by_the_user_runs_one_call_at_a_time() -> None:
    costs = _compute_bound(most=None)
    assert costs.stream_count == 1
    assert costs.plan() == CallPlan(lone_threads=1)


def test_explicit_workers_are_not_a_choice() -> None:
    costs = CallCosts(base_threads=1, most_threads=None, streams_allowed=True, workers=2)
    plans = _measured(costs, {1: 0.061}, stream_row_s=0.5, calls=30)
    assert set(plans) == {CallPlan(lone_threads=1, streams=2, stream_threads=1)}
    assert not costs.chooses_threads


def test_streams_share_the_floor_of_merged_rows_so_as_many_rows_are_in_flight_as_on_one_call() -> None:
    costs = _compute_bound()
    _measured(costs, {1: 0.061, 2: 0.034}, stream_row_s=0.064, calls=10)
    assert costs.merged_rows() * costs.stream_count == MERGED_ROWS_FLOOR


def test_more_cores_than_streams_give_each_stream_several_threads() -> None:
    assert stream_layout(2) == (2, 1)
    assert stream_layout(3) == (3, 1)
    assert stream_layout(8) == (4, 2)
    assert stream_layout(1) == (1, 1)


# -- which handlers run on several streams ---------------------------------------------------------------


class OwnPostprocess(TensorHandler):
    def postprocess(self, data: torch.Tensor) -> list[Any]:
        return [row[0] for row in data.tolist()]


def test_only_handlers_running_no_code_of_the_archive_in_a_call_run_on_several_streams() -> None:
    assert runs_concurrently(TensorHandler(), merge_plan(TensorHandler()))
    assert not runs_concurrently(OwnPostprocess(), merge_plan(OwnPostprocess()))


def test_a_streams_copy_of_a_handler_has_its_own_context_and_the_same_weights() -> None:
    handler = TensorHandler()
    handler.model = torch.nn.Linear(2, 2)
    handler.context = "first stream's call"
    copy = stream_copy(handler)
    copy.context = "second stream's call"
    assert handler.context == "first stream's call"
    assert copy.model is handler.model


# -- the runner ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Forward:
    started: float
    ended: float
    threads: int
    thread: str
    rows: int


class SlowRows(torch.nn.Module):
    """Stands in for a large network: every row takes ``row_s`` seconds of a sleep (which releases the GIL,
    as torch's kernels do), and each forward records its thread, intra-op thread count and interval."""

    def __init__(self, row_s: float) -> None:
        super().__init__()
        self.row_s = row_s
        self.forwards: list[Forward] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        started = time.perf_counter()
        time.sleep(self.row_s * x.shape[0])
        name = threading.current_thread().name
        self.forwards.append(Forward(started, time.perf_counter(), torch.get_num_threads(), name, x.shape[0]))
        return x * 2


def _overlaps(forward: Forward, forwards: list[Forward]) -> bool:
    return any(o is not forward and o.started < forward.ended and forward.started < o.ended for o in forwards)


async def _wave(runner: ModelRunner, concurrency: int, offset: int = 0) -> list[Any]:
    return await asyncio.gather(
        *(runner.predict([{"data": [float(i)]}], {}, f"r{i}") for i in range(offset, offset + concurrency))
    )


@pytest.fixture
def restore_threads() -> Any:
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def _runner(handler: TensorHandler, model: torch.nn.Module, most: int | None = 2) -> ModelRunner:
    handler.model = model
    runner: ModelRunner = loaded_runner(handler)
    runner.share_cpus(1, most)
    return runner


def test_a_compute_bound_model_runs_two_one_thread_calls_while_requests_wait(restore_threads: None) -> None:
    model = SlowRows(row_s=0.05)  # two rows fill a merged call's time budget: the floor applies
    runner = _runner(TensorHandler(), model)

    async def scenario() -> list[Forward]:
        try:
            for _ in range(3):  # lone requests: measured on one thread, then on every core
                assert await _wave(runner, 1) == [[[0.0]]]
            model.forwards.clear()
            for wave in range(3):
                answers = await _wave(runner, 12, offset=wave)
                assert answers == [[[2.0 * i]] for i in range(wave, wave + 12)]
            return list(model.forwards)
        finally:
            await runner.stop()

    forwards = asyncio.run(scenario())
    overlapping = [f for f in forwards if _overlaps(f, forwards)]
    assert len(overlapping) >= len(forwards) // 2
    assert {f.threads for f in overlapping} == {1}
    assert len({f.thread for f in overlapping}) == 2
    assert max(f.rows for f in forwards[1:]) == MERGED_ROWS_FLOOR // 2  # the floor shared by two calls
    assert not any(_overlaps(f, forwards) for f in forwards if f.threads == 2)


def test_a_lone_request_of_a_compute_bound_model_gets_one_call_on_every_core(restore_threads: None) -> None:
    model = SlowRows(row_s=0.02)
    runner = _runner(TensorHandler(), model)

    async def scenario() -> None:
        try:
            await _wave(runner, 8)  # measured under a queue: streams
            for _ in range(6):
                await _wave(runner, 1)
        finally:
            await runner.stop()

    asyncio.run(scenario())
    lone = model.forwards[-4:]
    assert not any(_overlaps(f, model.forwards) for f in lone)
    assert [f.threads for f in lone].count(2) >= 3  # every core (the base count re-measured now and then)


def test_each_stream_calls_a_handler_of_its_own_sharing_the_model(restore_threads: None) -> None:
    handler = TensorHandler()
    model = SlowRows(row_s=0.01)
    runner = _runner(handler, model)
    asyncio.run(_run_then_stop(runner, 12))
    second, _ = runner._stream_handler(1)
    assert second is not handler and second.model is handler.model


async def _run_then_stop(runner: ModelRunner, concurrency: int) -> None:
    try:
        await _wave(runner, 1)
        await _wave(runner, 1)
        await _wave(runner, concurrency)
    finally:
        await runner.stop()


@pytest.mark.parametrize(
    ("handler", "most"),
    [(OwnPostprocess(), 2), (TensorHandler(), None)],
    ids=["a handler with its own postprocess", "threads fixed by the user"],
)
def test_calls_run_one_at_a_time_where_two_at_once_are_not_allowed(
    handler: TensorHandler, most: int | None, restore_threads: None
) -> None:
    model = SlowRows(row_s=0.01)
    runner = _runner(handler, model, most)
    asyncio.run(_run_then_stop(runner, 12))
    assert not any(_overlaps(f, model.forwards) for f in model.forwards)


def test_explicit_workers_run_that_many_calls_at_once_on_one_thread_each() -> None:
    handler = TensorHandler()
    model = SlowRows(row_s=0.01)
    handler.model = model
    runner = loaded_runner(handler, ModelSettings(workers=2))
    runner.share_cpus(1, None)
    asyncio.run(_run_then_stop(runner, 12))
    assert len({f.thread for f in model.forwards if _overlaps(f, model.forwards)}) == 2
    assert not runner.costs.chooses_threads  # each call on the server's count


def test_an_explanation_waits_for_the_calls_running_and_none_starts_beside_it(restore_threads: None) -> None:
    model = SlowRows(row_s=0.02)
    runner = _runner(TensorHandler(), model)
    spans: list[tuple[float, float]] = []

    def explain() -> str:
        started = time.perf_counter()
        time.sleep(0.05)
        spans.append((started, time.perf_counter()))
        return "explained"

    async def scenario() -> None:
        try:
            await _wave(runner, 1)
            await _wave(runner, 1)
            predictions = asyncio.ensure_future(_wave(runner, 12))
            await asyncio.sleep(0.005)  # two stream calls are running
            assert await runner.run_in_worker(explain) == "explained"
            await predictions
        finally:
            await runner.stop()

    asyncio.run(scenario())
    ((started, ended),) = spans
    assert not any(f.started < ended and started < f.ended for f in model.forwards)


def test_each_streams_thread_keeps_its_own_intra_op_thread_count(restore_threads: None) -> None:
    """What streams rely on: a stream's thread sets its own count and keeps it while another thread sets a
    different one, its first torch use included (which takes the count last set by any thread)."""
    seen: dict[str, int] = {}
    first_set = threading.Event()
    second_set = threading.Event()

    def first() -> None:
        _use_torch_threads(1)
        first_set.set()
        second_set.wait(5)
        seen["first"] = torch.get_num_threads()

    def second() -> None:
        first_set.wait(5)
        _use_torch_threads(2)
        second_set.set()
        seen["second"] = torch.get_num_threads()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {"first": 1, "second": 2}
