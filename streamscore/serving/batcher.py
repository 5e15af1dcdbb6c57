"""Dynamic batching across concurrent requests: their events go through one model call.

Each request adds its items (events or tensor rows) to the core's ``Batcher`` (count-or-time
closing, as in the stream). One task per lane takes batches and runs the scoring call on a worker
thread, so the event loop keeps accepting requests while the model works (onnxruntime releases the
GIL). Adaptive (the default), like the stream's intake: a batch is taken as soon as no more items
are waiting, so what arrived while the model was busy is the next batch and a lone request is
scored at once. Windowed: a batch closes at ``max_size`` items or when its first has waited
``max_wait``. The queue is bounded: past ``max_queued`` items a request is refused (``Overloaded``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from streamscore.core.batching import Batcher

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Overloaded(Exception):
    """More items are waiting than the lane may hold; the caller should back off."""


@dataclass(slots=True, eq=False)
class _Request(Generic[T, R]):
    """One request's items, its results as they come back and the future its handler awaits."""

    items: Sequence[T]
    future: asyncio.Future[list[R]]
    results: list[R | None] = field(default_factory=list)
    left: int = 0


_Item = tuple[_Request[T, R], int]
"""(request, position of the item in it)."""


class DynamicBatcher(Generic[T, R]):
    """Gathers the items of concurrent ``submit`` calls into calls of ``score`` on ``executor``.

    ``score`` takes a list of items and returns one result per item, in order; whatever it raises
    is raised to every request of that batch. ``observe`` is told the size of each batch.
    """

    def __init__(self, score: Callable[[list[T]], list[R]], executor: Executor, max_size: int, max_wait: float,
                 adaptive: bool, max_queued: int, observe: Callable[[int], None] | None = None) -> None:
        self._score = score
        self._executor = executor
        self._batcher: Batcher[_Item[T, R]] = Batcher(max_size, max_wait)
        self._closed: deque[list[_Item[T, R]]] = deque()
        self._adaptive = adaptive
        self._max_queued = max_queued
        self._observe = observe
        self._queued = 0
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        """Items waiting for a model call."""
        return self._queued

    async def submit(self, items: Sequence[T]) -> list[R]:
        """The results of ``items``, scored together with whatever else is waiting."""
        if not items:
            return []
        if self._queued + len(items) > self._max_queued:
            raise Overloaded(f"{self._queued} events are waiting (serve.max_queued_events is {self._max_queued})")
        loop = asyncio.get_running_loop()
        request: _Request[T, R] = _Request(items, loop.create_future(), [None] * len(items), len(items))
        self._closed.extend(self._batcher.add([(request, i) for i in range(len(items))]))
        self._queued += len(items)
        self._wake()
        return await request.future

    def _wake(self) -> None:
        if self._arrived is None:
            self._arrived = asyncio.Event()
        self._arrived.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def close(self) -> None:
        """Stop the batching task; requests still waiting are cancelled."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for batch in [*self._closed, self._batcher.take() or []]:
            for request, _ in batch:
                if not request.future.done():
                    request.future.cancel()
        self._closed.clear()

    async def _run(self) -> None:
        assert self._arrived is not None
        arrived = self._arrived
        while True:
            batch = await self._next(arrived)
            self._queued -= len(batch)
            live = [item for item in batch if not item[0].future.done()]  # timed-out requests are skipped
            if live:
                await self._call(live)

    async def _next(self, arrived: asyncio.Event) -> list[_Item[T, R]]:
        """The next batch: a full one, else the open one when adaptive or due, else wait."""
        batcher = self._batcher
        while True:
            if self._closed:
                return self._closed.popleft()
            remaining = batcher.remaining()
            if remaining is not None and (self._adaptive or remaining == 0):
                batch = batcher.take()
                assert batch is not None
                return batch
            arrived.clear()
            if remaining is None:
                await arrived.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), remaining)

    async def _call(self, batch: list[_Item[T, R]]) -> None:
        if self._observe is not None:
            self._observe(len(batch))
        items = [request.items[i] for request, i in batch]
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self._score, items)
        except Exception as exc:  # noqa: BLE001 - the requests of this batch get the error; the lane goes on
            for request in {id(r): r for r, _ in batch}.values():
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        for (request, i), result in zip(batch, results, strict=True):
            request.results[i] = result
            request.left -= 1
            if request.left == 0 and not request.future.done():
                request.future.set_result(request.results)  # type: ignore[arg-type] # every slot is filled
