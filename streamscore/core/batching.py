"""Closes a batch when it holds ``max_size`` items or its first item has waited ``max_wait``.

The semantics of Faust's ``Stream.take(max_, within)``, without I/O: the caller feeds what it
consumed and asks how long it may block before the open batch is due.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    def __init__(self, max_size: int, max_wait: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        if max_wait < 0:
            raise ValueError("max_wait must not be negative")
        self.max_size = max_size
        self.max_wait = max_wait
        self._clock = clock
        self._items: list[T] = []
        self._opened_at = 0.0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, items: Sequence[T]) -> list[list[T]]:
        """Append items; returns the batches that became full (oldest first), possibly none."""
        full: list[list[T]] = []
        start = 0
        while start < len(items):
            if not self._items:
                self._opened_at = self._clock()
            take = self.max_size - len(self._items)
            self._items.extend(items[start:start + take])
            start += take
            if len(self._items) >= self.max_size:
                full.append(self._items)
                self._items = []
        return full

    def remaining(self) -> float | None:
        """Seconds until the open batch is due (0 when overdue); None when nothing is open."""
        if not self._items:
            return None
        return max(0.0, self._opened_at + self.max_wait - self._clock())

    def take_due(self) -> list[T] | None:
        """The open batch if its first item has waited ``max_wait``, else None."""
        remaining = self.remaining()
        if remaining is None or remaining > 0:
            return None
        return self.take()

    def take(self, limit: int | None = None) -> list[T] | None:
        """The open batch now, due or not (for drains), or its first ``limit`` items; None when
        nothing is open."""
        if not self._items:
            return None
        if limit is not None and limit < len(self._items):
            items, self._items = self._items[:limit], self._items[limit:]
            return items
        items, self._items = self._items, []
        return items

    def hold(self, items: Sequence[T]) -> None:
        """Append items without closing batches (while nothing can be scored)."""
        if items:
            if not self._items:
                self._opened_at = self._clock()
            self._items.extend(items)

    def restore(self, items: Sequence[T]) -> None:
        """Put items back in front of the open batch, in order (work that could not be done yet);
        the batch may then hold more than ``max_size`` until it is taken again."""
        if items:
            if not self._items:
                self._opened_at = self._clock()
            self._items[:0] = items
