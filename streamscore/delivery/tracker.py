"""Which offsets may be committed: never past an event whose output is not yet acknowledged.

Every scored batch gets a ``Ticket`` counting its outputs in flight; the producer's delivery
callback only records on it. Per partition, tickets queue in consumption order, and a partition's
commit position advances over the leading tickets that are done, so an acknowledgement that
arrives early (another partition, a later batch) waits for everything before it.

``uncommitted`` counts the events tracked but not yet covered by a confirmed commit: the pipeline
bounds it, which bounds both memory and the duplicates a crash can cause.

An output refused for its size alone (``OutputTooLarge``) is not a failure: its acknowledgement
slot stays pending and the refusal is queued in ``OffsetTracker.refused``, so that the committer
dead-letters the input and the dead letter's acknowledgement fills the slot. Until then the batch,
and every later one of its partitions, stays uncommitted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from streamscore.core.records import TopicPartition
from streamscore.errors import OutputTooLarge


class Ticket:
    """Outputs in flight for one batch. ``ack`` is the delivery callback: it only records."""

    __slots__ = ("error", "inputs", "lettered", "payload", "pending", "refused", "size")

    def __init__(self, size: int, payload: Any = None, inputs: Any = None) -> None:
        self.size = size
        self.pending = size
        self.error: Any = None
        self.payload = payload
        self.inputs = inputs
        """What a refused output's input is found in (the batch and its scored result), until done."""
        self.refused: list[tuple[Ticket, OutputTooLarge]] | None = None
        """Where size refusals are queued (the tracker's list, set by ``track``)."""
        self.lettered: set[int] | None = None
        """Positions in the batch already dead-lettered for a refused output."""

    def ack(self, err: Any, _msg: Any = None) -> None:
        if err is not None:
            if isinstance(err, OutputTooLarge) and err.alone and self.refused is not None:
                self.refused.append((self, err))  # the slot stays pending until the dead letter is acknowledged
                return
            if self.error is None:
                self.error = err
        self.pending -= 1

    @property
    def done(self) -> bool:
        return self.pending <= 0 and self.error is None


class OffsetTracker:
    """Commit positions (offset + 1) per partition, advanced only over acknowledged work."""

    def __init__(self) -> None:
        self._queues: dict[TopicPartition, deque[tuple[int, Ticket, int]]] = {}
        self._open: list[Ticket] = []
        self._positions: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._acked: dict[TopicPartition, deque[tuple[int, int]]] = {}
        self.uncommitted = 0
        """Events tracked whose offsets no confirmed commit covers yet."""
        self.refused: list[tuple[Ticket, OutputTooLarge]] = []
        """Outputs refused for their size alone, not yet dead-lettered (``Ticket.ack`` queues them)."""

    def track(self, ticket: Ticket, last_offsets: Mapping[TopicPartition, int],
              counts: Mapping[TopicPartition, int] | None = None) -> None:
        """Register a batch, in consumption order, with the highest offset it holds per partition
        and how many of its events each partition holds (default: the ticket's size, spread evenly)."""
        self._open.append(ticket)
        ticket.refused = self.refused
        if counts is None:
            share, extra = divmod(ticket.size, max(1, len(last_offsets)))
            counts = {tp: share + (extra if i == 0 else 0) for i, tp in enumerate(last_offsets)}
        for tp, offset in last_offsets.items():
            self._queues.setdefault(tp, deque()).append((offset, ticket, counts[tp]))
            self.uncommitted += counts[tp]

    @property
    def in_flight(self) -> int:
        """Outputs produced but not yet acknowledged."""
        return sum(t.pending for t in self._open)

    def completed(self) -> list[Ticket]:
        """Tickets that became done since the last call (each is returned once)."""
        done = [t for t in self._open if t.done]
        if done:
            self._open = [t for t in self._open if not t.done]
            for ticket in done:  # nothing of theirs can be refused any more
                ticket.inputs = None
        return done

    def failure(self) -> Any:
        """The first delivery error recorded on an open ticket, or None."""
        return next((t.error for t in self._open if t.error is not None), None)

    def committable(self) -> dict[TopicPartition, int]:
        """Positions that moved since the last ``mark_committed``; commit them as offset + 1."""
        for tp, queue in self._queues.items():
            while queue and queue[0][1].done:
                offset, _, count = queue.popleft()
                self._positions[tp] = offset + 1
                self._acked.setdefault(tp, deque()).append((offset + 1, count))
        return {tp: pos for tp, pos in self._positions.items() if self._committed.get(tp) != pos}

    def mark_committed(self, positions: Mapping[TopicPartition, int]) -> None:
        """Record positions the broker confirmed; the events they cover leave ``uncommitted``."""
        self._committed.update(positions)
        for tp, position in positions.items():
            acked = self._acked.get(tp)
            while acked and acked[0][0] <= position:
                self.uncommitted -= acked.popleft()[1]

    def pending_partitions(self) -> set[TopicPartition]:
        """Partitions with work not yet acknowledged."""
        return {tp for tp, queue in self._queues.items() if queue}

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop all state of partitions that left this consumer."""
        for tp in partitions:
            self.uncommitted -= sum(entry[2] for entry in self._queues.pop(tp, ()))
            self.uncommitted -= sum(entry[1] for entry in self._acked.pop(tp, ()))
            self._positions.pop(tp, None)
            self._committed.pop(tp, None)
