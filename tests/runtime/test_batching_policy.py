"""The batcher's waiting policy: a partial batch waits for as many rows as the previous batch had,
never longer than ``max_delay`` (plain asyncio, no server)."""

from __future__ import annotations

import asyncio

from isvc_runtime.batching import Batcher, Pending


class Recorder:
    """A ``run_batch`` that answers each row with row * 10 and records the batches and their times."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.times: list[float] = []

    async def __call__(self, batch: list[Pending]) -> None:
        self.batches.append([row for pending in batch for row in pending.rows])
        self.times.append(asyncio.get_running_loop().time())
        for pending in batch:
            pending.future.set_result([row * 10 for row in pending.rows])


def test_a_lone_request_is_not_held_back_for_a_batch_that_is_not_coming() -> None:
    async def scenario() -> float:
        recorder = Recorder()
        batcher = Batcher(recorder, max_rows=32, max_delay=5.0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for value in range(3):  # one client, one request after the other
            assert await batcher.submit([value], {}, "r") == [value * 10]
        await batcher.stop()
        assert recorder.batches == [[0], [1], [2]]
        return loop.time() - started

    assert asyncio.run(scenario()) < 2.5  # far below the 5 s max_delay a full batch would wait


def test_steady_concurrent_load_is_gathered_into_batches_of_the_concurrency() -> None:
    async def scenario() -> list[list[int]]:
        recorder = Recorder()
        batcher = Batcher(recorder, max_rows=32, max_delay=5.0)
        await asyncio.gather(*(batcher.submit([v], {}, "r") for v in range(4)))  # 4 clients at once
        assert batcher.fill_target == 4

        async def client(value: int) -> list[int]:
            await asyncio.sleep(0.002 * value)  # the same 4 clients come back, staggered
            return await batcher.submit([value], {}, "r")

        answers = await asyncio.gather(*(client(v) for v in range(10, 14)))
        assert answers == [[100], [110], [120], [130]]
        await batcher.stop()
        return recorder.batches

    assert asyncio.run(scenario()) == [[0, 1, 2, 3], [10, 11, 12, 13]]


def test_a_batch_short_of_its_target_runs_once_max_delay_has_passed() -> None:
    async def scenario() -> tuple[list[list[int]], float]:
        recorder = Recorder()
        batcher = Batcher(recorder, max_rows=8, max_delay=0.2)
        await asyncio.gather(*(batcher.submit([v], {}, "r") for v in range(4)))
        submitted = asyncio.get_running_loop().time()
        await asyncio.gather(*(batcher.submit([v], {}, "r") for v in (5, 6)))  # 2 of the expected 4
        waited = recorder.times[-1] - submitted
        assert batcher.fill_target == 2  # the smaller load is what the next batch expects
        await batcher.stop()
        return recorder.batches, waited

    batches, waited = asyncio.run(scenario())
    assert batches == [[0, 1, 2, 3], [5, 6]]
    assert 0.15 <= waited < 3.0


def test_fill_target_is_capped_by_max_rows_and_ignores_exclusive_requests() -> None:
    async def scenario() -> None:
        batcher = Batcher(Recorder(), max_rows=4, max_delay=0.05)
        assert batcher.fill_target == 1
        await batcher.submit(list(range(10)), {}, "big")  # one request larger than max_rows
        assert batcher.fill_target == 4
        await batcher.submit([1], {}, "explain", exclusive=True)
        assert batcher.fill_target == 4
        await batcher.stop()

    asyncio.run(scenario())
