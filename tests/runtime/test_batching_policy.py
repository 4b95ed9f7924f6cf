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


class SlowRecorder(Recorder):
    """A :class:`Recorder` whose first batch takes ``first_batch_s`` (a forward that runs a while)."""

    def __init__(self, first_batch_s: float) -> None:
        super().__init__()
        self.first_batch_s = first_batch_s

    async def __call__(self, batch: list[Pending]) -> None:
        if not self.batches:
            await asyncio.sleep(self.first_batch_s)
        await super().__call__(batch)


async def closed_loop(late: list[int]) -> list[list[int]]:
    """Four clients' batch runs 0.3 s (max_delay 0.2 s); the ``late`` requests arrive meanwhile, past
    their own max_delay when it ends; each of the four comes back 10 ms after its answer."""
    recorder = SlowRecorder(first_batch_s=0.3)
    batcher = Batcher(recorder, max_rows=4, max_delay=0.2)
    loop = asyncio.get_running_loop()

    async def client(value: int) -> None:
        await batcher.submit([value], {}, "r")
        await asyncio.sleep(0.01)
        await batcher.submit([value + 10], {}, "r")

    clients = [loop.create_task(client(v)) for v in range(4)]
    await asyncio.sleep(0.05)  # the batch of four is running
    answers = [batcher.submit([v], {}, "r") for v in late]
    await asyncio.gather(*clients)
    assert [await a for a in answers] == [[v * 10] for v in late]
    await batcher.stop()
    return recorder.batches


def test_a_straggler_that_queued_behind_a_running_batch_waits_for_company_after_it() -> None:
    """One late request of five clients: it goes with the four that come back, not alone."""
    assert asyncio.run(closed_loop([4])) == [[0, 1, 2, 3], [4, 10, 11, 12], [13]]


def test_a_half_full_batch_that_queued_behind_a_running_batch_runs_when_the_model_is_free() -> None:
    """Two late requests (half the target): they run at once, not held for the four coming back."""
    assert asyncio.run(closed_loop([4, 5])) == [[0, 1, 2, 3], [4, 5], [10, 11, 12, 13]]
