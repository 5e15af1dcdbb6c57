"""DynamicBatcher: concurrent requests share model calls; limits, errors and timeouts per request."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from streamscore.serving.batcher import DynamicBatcher, Overloaded


class Recorder:
    """A scoring call that records its batches; ``gate`` holds the first call until released."""

    def __init__(self, fail_on: int | None = None, hold_first: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on
        self.gate = threading.Event()
        if not hold_first:
            self.gate.set()

    def __call__(self, items: list[int]) -> list[int]:
        self.gate.wait(10)
        self.batches.append(list(items))
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError("model says no")
        return [i * 10 for i in items]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def batcher(score: Recorder, **options: Any) -> tuple[DynamicBatcher[int, int], ThreadPoolExecutor, list[int]]:
    sizes: list[int] = []
    executor = ThreadPoolExecutor(1)
    args = {"max_size": 100, "max_wait": 0.05, "adaptive": True, "max_queued": 1000, **options}
    return DynamicBatcher(score, executor, observe=sizes.append, **args), executor, sizes


def test_requests_waiting_while_the_model_is_busy_are_one_batch() -> None:
    score = Recorder(hold_first=True)
    lane, executor, sizes = batcher(score)

    async def scenario() -> list[list[int]]:
        first = asyncio.ensure_future(lane.submit([0]))
        await asyncio.sleep(0.05)  # the first call is running (held)
        rest = [asyncio.ensure_future(lane.submit([i, i + 1])) for i in range(1, 20, 2)]
        await asyncio.sleep(0.05)
        score.gate.set()
        return [await first, *[await r for r in rest]]

    results = run(scenario())
    executor.shutdown()
    assert results[0] == [0]
    assert results[1:] == [[i * 10, (i + 1) * 10] for i in range(1, 20, 2)], "each request gets its own results"
    assert sizes == [1, 20], "the ten requests that came during the first call went in one call"


def test_a_batch_is_at_most_max_size_and_a_request_may_span_batches() -> None:
    score = Recorder()
    lane, executor, sizes = batcher(score, max_size=4, adaptive=False, max_wait=0.0)
    assert run(lane.submit(list(range(10)))) == [i * 10 for i in range(10)]
    executor.shutdown()
    assert sizes == [4, 4, 2]


def test_windowed_batches_wait_for_more_requests() -> None:
    score = Recorder()
    lane, executor, sizes = batcher(score, adaptive=False, max_wait=0.2)

    async def scenario() -> None:
        first = asyncio.ensure_future(lane.submit([1]))
        await asyncio.sleep(0.01)
        await asyncio.gather(first, lane.submit([2]), lane.submit([3]))

    run(scenario())
    executor.shutdown()
    assert sizes == [3]


def test_an_error_reaches_every_request_of_its_batch_and_the_lane_goes_on() -> None:
    score = Recorder(fail_on=2, hold_first=True)
    lane, executor, _ = batcher(score)

    async def scenario() -> tuple[list[Any], list[int]]:
        first = asyncio.ensure_future(lane.submit([0]))
        await asyncio.sleep(0.05)
        both = [asyncio.ensure_future(lane.submit([1])), asyncio.ensure_future(lane.submit([2]))]
        await asyncio.sleep(0.01)
        score.gate.set()
        await first
        outcomes = await asyncio.gather(*both, return_exceptions=True)
        return outcomes, await lane.submit([5])

    outcomes, after = run(scenario())
    executor.shutdown()
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert after == [50]


def test_a_full_queue_refuses_the_request() -> None:
    score = Recorder(hold_first=True)
    lane, executor, _ = batcher(score, max_queued=3)

    async def scenario() -> None:
        first = asyncio.ensure_future(lane.submit([0]))
        await asyncio.sleep(0.05)  # taken: no longer queued
        waiting = asyncio.ensure_future(lane.submit([1, 2]))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await lane.submit([3, 4])
        score.gate.set()
        await asyncio.gather(first, waiting)

    run(scenario())
    executor.shutdown()


def test_a_request_that_timed_out_is_not_scored() -> None:
    score = Recorder(hold_first=True)
    lane, executor, _ = batcher(score)

    async def scenario() -> None:
        first = asyncio.ensure_future(lane.submit([0]))
        await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(lane.submit([7]), 0.01)
        score.gate.set()
        await first
        assert await lane.submit([8]) == [80]

    run(scenario())
    executor.shutdown()
    assert [7] not in score.batches and all(7 not in b for b in score.batches)
