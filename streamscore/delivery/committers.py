"""The commit protocol of each delivery mode, so that the pipeline's loop never branches on it.

A committer owns what may be committed (the ``OffsetTracker``), which partitions are owned, and
where the group would resume each of them. ``AtLeastOnce`` commits acknowledged positions to the
group; ``ExactlyOnce`` commits the outputs and the positions they came from in one transaction and,
when Kafka says to abort, rewinds the source so that the work is redone, never half-kept. Every
call that can block takes a ``Deadline``: one budget for a whole stop or revoke.

Both take the ``Batcher``: the events consumed but not yet scored live there, and a rewind or a
lost partition must drop them too.

Both dead-letter the input of an output a destination refused for its size alone
(``OutputTooLarge``, reason ``output_too_large``) and commit that input only once its dead letter
is acknowledged; every other refused output stops the service (at-least-once) or aborts the
transaction (exactly-once), except a size refusal exactly-once cannot judge alone (the broker
refused a batch), which stops the service too.
"""

from __future__ import annotations

import collections
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from operator import itemgetter, methodcaller
from typing import cast

import numpy as np

from streamscore.core.batching import Batcher
from streamscore.core.records import DeadLetter, Reason, Rejection, ScoredBatch, SourceMessage, TopicPartition
from streamscore.core.render import DEAD_LETTER_SAMPLE_BYTES, dead_letter
from streamscore.delivery.deadline import Deadline
from streamscore.delivery.tracker import OffsetTracker, Ticket
from streamscore.destinations.base import Destination, Outputs
from streamscore.engines.base import Source, Transactions
from streamscore.errors import BrokerError, ConfigError, DeliveryError, OutputTooLarge, TransactionAborted
from streamscore.metrics import Metrics, Totals

log = logging.getLogger(__name__)

_topic, _partition, _offset, _timestamp = map(methodcaller, ("topic", "partition", "offset", "timestamp"))
_second = itemgetter(1)

MAX_ABORTS_IN_A_ROW = 5
"""Exactly-once: after this many transactions in a row fail, stop (exit non-zero) rather than loop."""


class Committer(ABC):
    """What both modes share: tracking, ownership, settling in-flight outputs. Subclasses commit."""

    def __init__(self, source: Source, outputs: Outputs, batcher: Batcher[SourceMessage], metrics: Metrics,
                 commit_timeout: float) -> None:
        self.source = source
        self.outputs = outputs
        self.batcher = batcher
        self.metrics = metrics
        self.commit_timeout = commit_timeout
        """The budget of a commit made while running (a stop or revoke brings its own deadline)."""
        self.tracker = OffsetTracker()
        self.totals = Totals()
        """What the stream did: the pipeline counts its batches here, the committer the late dead letters."""
        self.assigned: set[TopicPartition] = set()
        self.restart_at: dict[TopicPartition, int] = {}
        """Per partition, where the group would resume: the last committed position, or the first
        offset consumed since assignment. Rewind target and the base of the lag metric."""

    def begin(self) -> None:  # noqa: B027 - nothing to do by default; exactly-once opens a transaction
        """Before a batch's outputs are written."""

    def track(self, batch: Sequence[SourceMessage], outputs: int, result: ScoredBatch | None = None) -> Ticket:
        """Register a scored batch whose ``outputs`` records (``result``'s) are about to be written."""
        # C-level maps over the batch, no bytecode per event: it is all bookkeeping
        event_times = np.fromiter(map(_second, map(_timestamp, batch)), dtype=np.int64, count=len(batch))
        ticket = Ticket(outputs, payload=event_times, inputs=(batch, result) if result is not None else None)
        partitions: list[TopicPartition] = list(zip(map(_topic, batch), map(_partition, batch), strict=True))
        offsets: list[int] = list(map(_offset, batch))
        last_offsets = dict(zip(partitions, offsets, strict=True))  # a later offset of the same partition overwrites
        for tp in last_offsets.keys() - self.restart_at.keys():  # first events since assignment
            self.restart_at[tp] = offsets[partitions.index(tp)]
        self.tracker.track(ticket, last_offsets, collections.Counter(partitions))
        return ticket

    def settle(self, deadline: Deadline) -> bool:
        """Wait (within ``deadline``) for every output to be acknowledged, then commit; True when all were."""
        while self.tracker.in_flight and not deadline.expired:
            self.outputs.flush(min(0.5, deadline.remaining()))
            self.check()
        self.finish_completed()
        self.commit(deadline, final=True)
        left = self.tracker.in_flight
        if left:
            log.error("drain timed out with %d outputs unacknowledged; their offsets stay uncommitted", left)
        return left == 0

    def finish_completed(self) -> None:
        """End-to-end latency of the batches now fully acknowledged, and the window gauges."""
        done = self.tracker.completed()
        if done:
            now_ms = time.time() * 1000.0
            for ticket in done:
                times = ticket.payload
                self.metrics.end_to_end.observe_many((now_ms - times[times > 0]) / 1000.0)
        self.metrics.in_flight.set(self.tracker.in_flight)
        self.metrics.uncommitted.set(self.tracker.uncommitted)

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned.update(partitions)
        self.metrics.assigned_partitions.set(len(self.assigned))

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Drop every trace of partitions that left this instance, their unscored events included."""
        gone = set(partitions)
        unscored = self.batcher.take() or []
        self.batcher.restore([m for m in unscored if (m.topic(), m.partition()) not in gone])
        self.tracker.forget(partitions)
        self.assigned.difference_update(partitions)
        for tp in partitions:
            if self.restart_at.pop(tp, None) is not None:
                self.metrics.forget_partition(*tp)
        self.metrics.assigned_partitions.set(len(self.assigned))

    def lost(self, partitions: list[TopicPartition]) -> None:
        """Another member owns them now: nothing of theirs may be committed here."""
        self.forget(partitions)

    def report_lag(self) -> None:
        """Consumer lag per partition: the high watermark from the last fetch minus the position the
        group would resume from. Partitions that delivered nothing since assignment are not reported."""
        restart_at = self.restart_at
        for (topic, partition), high in self.source.high_watermarks(sorted(restart_at)).items():
            self.metrics.consumer_lag.labels(topic, str(partition)).set(max(0, high - restart_at[(topic, partition)]))

    def _committed(self, positions: dict[TopicPartition, int], final: bool) -> None:
        self.tracker.mark_committed(positions)
        self.restart_at.update(positions)
        self.metrics.commits.inc()
        if final and positions:
            log.info("committed %s", ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(positions.items())))

    def _positions(self) -> dict[TopicPartition, int]:
        return {tp: pos for tp, pos in self.tracker.committable().items() if tp in self.assigned}

    def check(self) -> None:
        """React to outputs a destination refused: dead-letter the inputs of those refused for their
        size alone; any other refusal is the mode's to handle (``_refused``)."""
        if self.tracker.refused:
            self.dead_letter_refused()
        error = self.tracker.failure()
        if error is not None:
            self.metrics.delivery_failures.inc()
            self._refused(error)

    def dead_letter_refused(self) -> None:
        """Write the dead letter (``output_too_large``) of each input whose output was refused for its
        size; its acknowledgement completes the batch. A refused record that is none of the batch's
        outputs (a dead letter too large for its own topic, say) fails the batch as before."""
        refused = self.tracker.refused[:]
        self.tracker.refused.clear()
        self.begin()  # exactly-once: the dead letters join the open transaction
        for ticket, error in refused:
            index = _input_of(ticket.inputs, error.value)
            if index is None:
                ticket.error = ticket.error or error
            ticket.lettered = ticket.lettered or set()
            if index is None or index in ticket.lettered:  # a second destination's refusal: one dead letter
                ticket.pending -= 1
                continue
            ticket.lettered.add(index)
            self.outputs.dead_letters.write_dead_letters([self._too_large(ticket.inputs[0][index], index, error)],
                                                         ticket.ack)
            self.metrics.dead_lettered.labels(str(Reason.OUTPUT_TOO_LARGE)).inc()
            # counted scored when its batch was: the totals move it (consumed = scored + dead-lettered);
            # the metrics' counters cannot, so there it counts as scored and dead-lettered
            self.totals.scored -= 1
            self.totals.dead_lettered += 1

    def _too_large(self, msg: SourceMessage, index: int, error: OutputTooLarge) -> DeadLetter:
        size = len(error.value or b"")
        log.warning("an output to %s (%d bytes) was refused as too large: dead-lettering %s[%s]@%s",
                    error.where, size, msg.topic(), msg.partition(), msg.offset())
        # truncated like an oversize input: the dead-letter topic would likely refuse it whole too
        return dead_letter(msg, Rejection(index, Reason.OUTPUT_TOO_LARGE, error.detail()), self.source.headers(msg),
                           DEAD_LETTER_SAMPLE_BYTES, int(time.time() * 1000))

    # -- what each mode does its own way ------------------------------------------------------

    @abstractmethod
    def _refused(self, error: object) -> None:
        """React to an output a destination refused (other than for its size alone)."""

    @abstractmethod
    def commit(self, deadline: Deadline | None = None, final: bool = False) -> None:
        """Commit what may be committed, within ``deadline`` (default: ``commit_timeout``)."""

    @abstractmethod
    def fail(self) -> None:
        """On the way out after an error: keep what is safe to keep, never more."""


class AtLeastOnce(Committer):
    """Acknowledged positions committed to the group, synchronously: a crash redoes at most the
    uncommitted window (plus one batch), and never skips an event."""

    def _refused(self, error: object) -> None:
        """A refused output stops the service: nothing past it may be committed."""
        raise error if isinstance(error, DeliveryError) else DeliveryError(str(error))

    def commit(self, deadline: Deadline | None = None, final: bool = False, quiet: bool = False) -> None:
        positions = self._positions()
        if not positions:
            return
        try:
            self.source.commit(positions, asynchronous=False)
        except BrokerError as exc:
            self.metrics.commit_failures.inc()
            if not quiet:
                log.warning("commit failed: %s", exc)
            return
        self._committed(positions, final)

    def fail(self) -> None:
        self.commit(final=True, quiet=True)


class ExactlyOnce(Committer):
    """Outputs and consumed positions in one Kafka transaction per commit interval."""

    def __init__(self, source: Source, outputs: Outputs, batcher: Batcher[SourceMessage], metrics: Metrics,
                 commit_timeout: float, transactions: Transactions) -> None:
        super().__init__(source, outputs, batcher, metrics, commit_timeout)
        self.transactions = transactions
        self.in_transaction = False
        self.aborts_in_a_row = 0
        self.abort_pending = False
        """A transaction left open because its abort ran out of a deadline (a revoke's, say)."""

    def begin(self) -> None:
        if self.abort_pending:  # an abort a stop or revoke had no time left for
            self.transactions.abort_transaction(self.commit_timeout)
            self.abort_pending = False
        if not self.in_transaction:
            self.transactions.begin_transaction()
            self.in_transaction = True

    def _refused(self, error: object, deadline: Deadline | None = None) -> None:
        """A refused output aborts the open transaction: its work is redone. Not an output the broker
        refused for its size (the redone transaction would write it again): that stops the service."""
        if isinstance(error, OutputTooLarge):  # never alone here: see engines/kafka_oversize.py
            raise DeliveryError(f"{error}; under delivery: exactly_once an output over the topic's max.message.bytes "
                                "fails its whole transaction and is not dead-lettered: raise the limit or copy less "
                                "into the output", error.code)
        self._abort(str(error), deadline or Deadline(self.commit_timeout))

    def commit(self, deadline: Deadline | None = None, final: bool = False) -> None:
        """Flush, then commit the outputs and the positions they came from in one transaction."""
        if not self.in_transaction:
            return
        deadline = deadline or Deadline(self.commit_timeout)
        left = self.outputs.flush(deadline.remaining())
        if self.tracker.refused:  # their dead letters join this transaction
            self.dead_letter_refused()
            left = self.outputs.flush(deadline.remaining())
        error = self.tracker.failure()
        if error is not None:
            self.metrics.delivery_failures.inc()
            self._refused(error, deadline)
            return
        if left:
            self._abort(f"{left} outputs not acknowledged in time", deadline)
            return
        positions = self._positions()
        try:
            self.transactions.commit_transaction(positions, self.source.group_metadata(), deadline.remaining())
        except TransactionAborted as exc:
            self.metrics.commit_failures.inc()
            self._abort(str(exc), deadline)
            return
        self.in_transaction = False
        self.aborts_in_a_row = 0
        self._committed(positions, final)

    def lost(self, partitions: list[TopicPartition]) -> None:
        """The open transaction holds their outputs: abort it and redo the rest."""
        self.forget(partitions)
        self._abort(f"lost {', '.join(f'{t}[{p}]' for t, p in sorted(partitions))}", Deadline(self.commit_timeout),
                    failure=False)

    def fail(self) -> None:
        """Abort what is open; the next owner redoes it."""
        if self.in_transaction or self.abort_pending:
            self.in_transaction = self.abort_pending = False
            try:
                self.transactions.abort_transaction(self.commit_timeout)
            except BrokerError as exc:
                log.warning("could not abort the open transaction (%s); it times out on the broker", exc)

    def _abort(self, why: str, deadline: Deadline, failure: bool = True) -> None:
        """Abort the open transaction and re-read its input: the source rewinds every partition to
        where the group would resume, and the unscored events and the tracker start afresh."""
        if failure:
            self.metrics.transaction_aborts.inc()
            self.aborts_in_a_row += 1
            log.warning("transaction aborted (%s): re-reading its input from the last committed positions", why)
        if self.in_transaction:
            self.in_transaction = False
            try:
                self.transactions.abort_transaction(deadline.remaining())
            except TransactionAborted as exc:  # out of this deadline's time: abort before the next one
                self.abort_pending = True
                log.warning("could not abort the transaction yet (%s); it is aborted before the next begins", exc)
        rewind = {tp: pos for tp, pos in self.restart_at.items() if tp in self.assigned}
        for m in self.batcher.take() or []:  # consumed, never scored: they are re-read too
            tp = cast(TopicPartition, (m.topic(), m.partition()))
            if tp in self.assigned:
                rewind.setdefault(tp, cast(int, m.offset()))
        self.source.seek(rewind)
        self.tracker = OffsetTracker()
        if self.aborts_in_a_row >= MAX_ABORTS_IN_A_ROW:
            raise DeliveryError(f"{self.aborts_in_a_row} transactions in a row were aborted; last: {why}")


def _input_of(inputs: tuple[Sequence[SourceMessage], ScoredBatch] | None, record: bytes | None) -> int | None:
    """The batch position of the input whose output (score or shadow record) is ``record``, or None.
    Runs only for a refused output: one C-level search of the batch's records."""
    if inputs is None or record is None:
        return None
    _, result = inputs
    for records in (result.outputs, result.shadow.outputs if result.shadow is not None else []):
        try:
            return result.scored[records.index(record)]
        except ValueError:
            continue
    return None


def check_delivery(delivery: str, transactions: Transactions | None, destinations: Sequence[Destination]) -> None:
    """Exactly-once needs the engine's transactions and destinations that join them (ConfigError)."""
    if delivery != "exactly_once":
        return
    if transactions is None:
        raise ConfigError("delivery: exactly_once needs an engine with transactions")
    plain = [d.name for d in destinations if not d.transactional]
    if plain:
        raise ConfigError(f"delivery: exactly_once needs destinations that join the engine's transactions; "
                          f"{', '.join(plain)} cannot")


def build_committer(delivery: str, source: Source, outputs: Outputs, batcher: Batcher[SourceMessage],
                    metrics: Metrics, commit_timeout: float, transactions: Transactions | None) -> Committer:
    """The committer of a delivery mode (``check_delivery`` first)."""
    check_delivery(delivery, transactions, outputs.destinations)
    if transactions is None or delivery == "at_least_once":
        return AtLeastOnce(source, outputs, batcher, metrics, commit_timeout)
    return ExactlyOnce(source, outputs, batcher, metrics, commit_timeout, transactions)
