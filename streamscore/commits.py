"""Which offsets may be committed: never past an event whose output is not yet acknowledged.

Every scored batch gets a ``Ticket`` counting its outputs in flight; the producer's delivery
callback only records on it. Per partition, tickets queue in consumption order, and a partition's
commit position advances over the leading tickets that are done, so an acknowledgement that
arrives early (another partition, a later batch) waits for everything before it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

TopicPartition = tuple[str, int]


class Ticket:
    """Outputs in flight for one batch. ``ack`` is the delivery callback: it only records."""

    __slots__ = ("size", "pending", "error", "payload")

    def __init__(self, size: int, payload: Any = None) -> None:
        self.size = size
        self.pending = size
        self.error: Any = None
        self.payload = payload

    def ack(self, err: Any, _msg: Any = None) -> None:
        if err is not None and self.error is None:
            self.error = err
        self.pending -= 1

    @property
    def done(self) -> bool:
        return self.pending <= 0 and self.error is None


class OffsetTracker:
    """Commit positions (offset + 1) per partition, advanced only over acknowledged work."""

    def __init__(self) -> None:
        self._queues: dict[TopicPartition, deque[tuple[int, Ticket]]] = {}
        self._open: list[Ticket] = []
        self._positions: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def track(self, ticket: Ticket, last_offsets: Mapping[TopicPartition, int]) -> None:
        """Register a batch, in consumption order, with the highest offset it holds per partition."""
        self._open.append(ticket)
        for tp, offset in last_offsets.items():
            self._queues.setdefault(tp, deque()).append((offset, ticket))

    @property
    def in_flight(self) -> int:
        """Outputs produced but not yet acknowledged."""
        return sum(t.pending for t in self._open)

    def completed(self) -> list[Ticket]:
        """Tickets that became done since the last call (each is returned once)."""
        done = [t for t in self._open if t.done]
        if done:
            self._open = [t for t in self._open if not t.done]
        return done

    def failure(self) -> Any:
        """The first delivery error recorded on an open ticket, or None."""
        return next((t.error for t in self._open if t.error is not None), None)

    def committable(self) -> dict[TopicPartition, int]:
        """Positions that moved since the last ``mark_committed``; commit them as offset + 1."""
        for tp, queue in self._queues.items():
            while queue and queue[0][1].done:
                offset, _ = queue.popleft()
                self._positions[tp] = offset + 1
        return {tp: pos for tp, pos in self._positions.items() if self._committed.get(tp) != pos}

    def mark_committed(self, positions: Mapping[TopicPartition, int]) -> None:
        self._committed.update(positions)

    def pending_partitions(self) -> set[TopicPartition]:
        """Partitions with work not yet acknowledged."""
        return {tp for tp, queue in self._queues.items() if queue}

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop all state of partitions that left this consumer."""
        for tp in partitions:
            self._queues.pop(tp, None)
            self._positions.pop(tp, None)
            self._committed.pop(tp, None)
