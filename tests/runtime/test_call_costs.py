"""The measured cost of handler calls: how many rows a merged call takes, how many threads a call gets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import torch
from isvc_runtime.batching.costs import (
    COMPUTE_BOUND_ROW_S,
    EXPLORE_FIRST,
    EXPLORE_MOST,
    MARGIN,
    MERGED_CALL_BUDGET_S,
    MERGED_ROWS_FLOOR,
    CallCosts,
    merged_rows,
)
from isvc_runtime.handlers.tensor import TensorHandler
from isvc_runtime.runner import MERGED_MAX_ROWS, ModelRunner
from runtime_support import loaded_runner

RESNET_ROW_S = 0.030  # about what a ResNet-18 image costs on two cores here
MNIST_ROW_S = 0.0008


def test_a_cheap_model_merges_up_to_the_most_rows() -> None:
    assert merged_rows(MNIST_ROW_S, 32) == 32


def test_an_expensive_model_merges_only_what_fits_the_time_budget_but_a_few_rows_at_least() -> None:
    assert merged_rows(0.015, 32) == int(MERGED_CALL_BUDGET_S / 0.015) == 6
    assert merged_rows(RESNET_ROW_S, 32) == MERGED_ROWS_FLOOR == 4
    assert merged_rows(0.5, 32) == MERGED_ROWS_FLOOR
    assert merged_rows(0.5, 2) == 2


def test_before_any_call_is_measured_a_merged_call_may_take_the_most_rows() -> None:
    assert merged_rows(None, 32) == 32
    assert CallCosts(base_threads=1, most_rows=32).merged_rows() == 32


def _run(costs: CallCosts, seconds_per_row: dict[int, float], calls: int, rows: int = 1) -> list[int]:
    """``calls`` calls whose rows cost what ``seconds_per_row`` says on each thread count; their threads."""
    used = []
    for _ in range(calls):
        threads = costs.threads_for_call()
        used.append(threads)
        costs.record(threads, rows, seconds_per_row[threads] * rows)
    return used


def test_a_cheap_model_keeps_the_servers_thread_count() -> None:
    costs = CallCosts(base_threads=1, most_threads=2)
    assert set(_run(costs, {1: MNIST_ROW_S, 2: MNIST_ROW_S / 2}, 50)) == {1}
    assert not costs.compute_bound


def test_a_compute_bound_model_uses_every_core_when_that_measures_faster() -> None:
    costs = CallCosts(base_threads=1, most_threads=2)
    used = _run(costs, {1: 0.060, 2: 0.034}, 200)
    assert used[:2] == [1, 2]  # each count measured once
    assert used[2 : EXPLORE_FIRST + 1] == [2] * (EXPLORE_FIRST - 1)
    assert used[EXPLORE_FIRST + 1] == 1  # then the other count re-measured
    assert used.count(1) <= 1 + 200 // EXPLORE_FIRST // 2  # re-measured ever more rarely
    assert costs.best_threads() == 2


def test_on_contended_cores_a_compute_bound_model_goes_back_to_the_servers_count() -> None:
    costs = CallCosts(base_threads=1, most_threads=2)
    _run(costs, {1: 0.060, 2: 0.034}, 20)
    assert costs.best_threads() == 2
    # other processes take the cores: two threads now wait on each other
    used = _run(costs, {1: 0.065, 2: 0.230}, EXPLORE_MOST + 20)
    assert costs.best_threads() == 1
    assert used[-10:] == [1] * 10


def test_a_compute_bound_model_keeps_every_core_where_fewer_measure_only_slightly_cheaper() -> None:
    costs = CallCosts(base_threads=1, most_threads=2)
    used = _run(costs, {1: 0.060, 2: 0.060 * MARGIN * 0.95}, 100)
    assert costs.best_threads() == 2
    assert used.count(1) <= 5  # measured, then re-measured ever more rarely


def test_one_noisy_call_that_switches_the_count_is_re_measured_soon_not_kept_for_long() -> None:
    costs = CallCosts(base_threads=1, most_threads=2)
    _run(costs, {1: 0.060, 2: 0.034}, 300)  # the choice confirmed again and again: re-measured rarely
    assert costs.best_threads() == 2
    # one call of two threads lands on a moment of contention ...
    threads = costs.threads_for_call()
    while threads != 2:
        costs.record(threads, 1, 0.060)
        threads = costs.threads_for_call()
    costs.record(2, 1, 0.300)
    assert costs.best_threads() == 1
    # ... the quiet cores' two threads are back within a few calls, not after hundreds on one
    used = _run(costs, {1: 0.060, 2: 0.034}, 3 * EXPLORE_FIRST)
    assert costs.best_threads() == 2
    assert used.index(2) <= EXPLORE_FIRST
    assert used[-EXPLORE_FIRST:].count(1) <= 1


def test_a_thread_count_fixed_by_the_user_is_never_changed() -> None:
    costs = CallCosts(base_threads=1, most_threads=None)
    assert set(_run(costs, {1: 0.060}, 30)) == {1}
    costs = CallCosts(base_threads=2, most_threads=2)
    assert set(_run(costs, {2: 0.060}, 30)) == {2}


def test_merged_rows_follow_the_cost_of_the_thread_count_in_use() -> None:
    costs = CallCosts(base_threads=1, most_threads=2, most_rows=32)
    _run(costs, {1: 0.050, 2: 0.010}, 10)  # two threads: 10 ms a row, so 10 rows fit
    assert costs.merged_rows() == int(MERGED_CALL_BUDGET_S / 0.010)
    assert COMPUTE_BOUND_ROW_S < 0.010


class SlowRows(torch.nn.Module):
    """A model whose every row takes ``row_s`` seconds (a stand-in for a large network's forward)."""

    def __init__(self, row_s: float) -> None:
        super().__init__()
        self.row_s = row_s
        self.batches: list[int] = []
        self.threads: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        self.threads.append(torch.get_num_threads())
        time.sleep(self.row_s * x.shape[0])
        return x * 2


def _runner(model: torch.nn.Module) -> ModelRunner:
    handler = TensorHandler()
    handler.model = model
    runner: ModelRunner = loaded_runner(handler)
    return runner


def _waves(runner: ModelRunner, waves: int, concurrency: int) -> list[list[Any]]:
    async def scenario() -> list[list[Any]]:
        answers: list[list[Any]] = []
        try:
            for _ in range(waves):
                answers += await asyncio.gather(
                    *(runner.predict([{"data": [float(i)]}], {}, f"r{i}") for i in range(concurrency))
                )
        finally:
            await runner.stop()
        return answers

    return asyncio.run(scenario())


def test_requests_of_an_expensive_model_are_merged_a_few_at_a_time_once_a_call_was_measured() -> None:
    model = SlowRows(row_s=0.05)  # two rows already fill the budget: the floor applies
    runner = _runner(model)
    runner.share_cpus(1, None)
    answers = _waves(runner, waves=3, concurrency=12)
    assert answers == [[[2.0 * i]] for i in range(12)] * 3
    assert runner.merging
    assert model.batches[0] == 12  # the first call, unmeasured, took what was waiting
    assert model.batches[1:] == [4, 4, 4] * 2
    assert runner.batcher.max_rows == MERGED_ROWS_FLOOR == 4


def test_requests_of_a_cheap_model_are_still_merged_up_to_the_most_rows() -> None:
    model = SlowRows(row_s=0.0)
    runner = _runner(model)
    answers = _waves(runner, waves=3, concurrency=40)
    assert len(answers) == 120
    assert runner.batcher.max_rows == MERGED_MAX_ROWS
    assert max(model.batches) == MERGED_MAX_ROWS


def test_a_compute_bound_models_calls_get_every_core_the_server_allows() -> None:
    model = SlowRows(row_s=0.01)
    runner = _runner(model)
    runner.share_cpus(1, 2)
    previous = torch.get_num_threads()
    try:
        _waves(runner, waves=EXPLORE_FIRST, concurrency=1)
    finally:
        torch.set_num_threads(previous)
    # each count measured, then the cheaper; sleeping rows cost the same on both, so either may win,
    # but both were tried and the calls ran on the counts chosen
    assert set(model.threads) == {1, 2}
    assert model.threads[:2] == [1, 2]
