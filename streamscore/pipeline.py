"""source -> batcher -> scorer -> sink -> commit: the one place the stages are wired together.

Single-threaded by design: librdkafka does the network I/O on its own threads, and this loop
consumes, scores, produces, serves delivery callbacks and commits in turn. Delivery runs ahead of
commits: the next batch is consumed while earlier outputs are still in flight, up to
``max_in_flight``; the ``OffsetTracker`` decides what may be committed.

With ``delivery: exactly_once`` the same loop runs inside Kafka transactions: the first batch
after a commit begins one, and a commit flushes the outputs, adds the consumed positions to the
transaction and commits both at once. Anything Kafka says to abort on aborts the transaction and
rewinds the consumer to the last committed positions, so the work is redone, never half-kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from streamscore.batching import Batcher
from streamscore.commits import OffsetTracker, Ticket, TopicPartition
from streamscore.config import Settings
from streamscore.engines.base import Sink, Source
from streamscore.errors import BrokerError, DeliveryError, TransactionAborted
from streamscore.metrics import Metrics
from streamscore.records import Headers, Rejection, SourceMessage
from streamscore.scoring import Scorer
from streamscore.server import Health

log = logging.getLogger(__name__)

RESUME_FRACTION = 0.75
"""Paused partitions resume once the uncommitted events fall below this share of the window."""

DEAD_LETTER_SAMPLE_BYTES = 1024
"""An oversize event is dead-lettered with only this much of its value; headers locate the original."""

MAX_ABORTS_IN_A_ROW = 5
"""Exactly-once: after this many transactions in a row fail, stop (exit non-zero) rather than loop."""


@dataclass(slots=True)
class Totals:
    """Running counts, for the demo's progress line and the shutdown log."""

    consumed: int = 0
    scored: int = 0
    dead_lettered: int = 0
    decisions: dict[str, int] = field(default_factory=dict)


class Pipeline:
    def __init__(self, settings: Settings, source: Source, sink: Sink, scorer: Scorer,
                 metrics: Metrics, health: Health | None = None) -> None:
        self.settings = settings
        self.source = source
        self.sink = sink
        self.scorer = scorer
        self.metrics = metrics
        self.health = health or Health()
        self.totals = Totals(decisions={label: 0 for label in scorer.policy.labels})
        b = settings.batching
        self._batcher: Batcher[SourceMessage] = Batcher(b.max_batch_size, b.max_wait_ms / 1000.0)
        self._tracker = OffsetTracker()
        self._commit_interval = b.commit_interval_ms / 1000.0
        self._next_commit = 0.0
        self._destination = settings.kafka.destination_topic
        self._dead_letter = settings.kafka.dead_letter_topic
        self._assigned: set[TopicPartition] = set()
        self._failed = False
        self._paused = False
        self._transactional = settings.delivery == "exactly_once"
        self._in_transaction = False
        self._aborts_in_a_row = 0
        self._restart_at: dict[TopicPartition, int] = {}
        """Per partition, where the group would resume: the last committed position, or the first
        offset consumed since assignment. Rewind target and the base of the lag metric."""

    @property
    def assigned(self) -> frozenset[TopicPartition]:
        """Source partitions this instance owns now."""
        return frozenset(self._assigned)

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> bool:
        """Consume and score until ``stop`` is set, then drain and commit.

        Returns True when the drain finished within ``drain_timeout_s``. Raises DeliveryError on a
        fatal delivery failure, after committing only what was acknowledged before it.
        """
        self.start()
        try:
            while not stop.is_set():
                self.step()
            self.health.ready = False
            return self.drain()
        except BaseException:
            self._failed = True
            self.health.ready = False
            if self._transactional:
                self._abort_quietly()
            else:
                self._commit(final=True, quiet=True)
            raise
        finally:
            # past the session timeout the group has evicted this member anyway
            self.source.close(self.settings.kafka.session_timeout_ms / 1000)

    def start(self) -> None:
        """Join the consumer group; ``run`` calls it, tests driving ``step`` call it themselves."""
        self.source.subscribe(self._on_assign, self._on_revoke, self._on_lost)
        self.health.ready = True

    def step(self) -> None:
        """One turn: consume, score due batches, serve deliveries, commit.

        When the in-flight window is full the source partitions are paused rather than left
        unpolled: polling goes on (so the consumer stays in its group however long the stall, and
        rebalances are served) but brings nothing new until the window has room again.
        """
        self.health.beat()
        self._check_deliveries()
        window_full = self._tracker.uncommitted >= self.settings.batching.max_in_flight
        self._apply_backpressure(window_full)
        self._consume_once()
        self.sink.poll(0.05 if window_full else 0)
        self._finish_completed()
        if window_full or time.monotonic() >= self._next_commit:
            self._commit()
            self._report_lag()
            self._next_commit = time.monotonic() + self._commit_interval

    def _apply_backpressure(self, window_full: bool) -> None:
        max_in_flight = self.settings.batching.max_in_flight
        if window_full and not self._paused:
            self._paused = True
            self.source.pause(sorted(self._assigned))
            log.debug("window full (%d uncommitted): partitions paused", self._tracker.uncommitted)
        elif self._paused and self._tracker.uncommitted < max_in_flight * RESUME_FRACTION:
            self._paused = False
            self.source.resume(sorted(self._assigned))

    def _consume_once(self) -> None:
        batcher = self._batcher
        remaining = batcher.remaining()
        timeout = batcher.max_wait if remaining is None else remaining
        timeout = min(max(timeout, 0.001), 0.1)
        messages = self.source.poll(batcher.max_size - len(batcher), timeout)
        if messages:
            for batch in batcher.add(messages):
                self._process(batch)
        due = batcher.take_due()
        if due:
            self._process(due)

    def drain(self) -> bool:
        """Score the open batch, wait for every output, commit. True if all were acknowledged."""
        deadline = time.monotonic() + self.settings.batching.drain_timeout_s
        pending = self._batcher.take()
        if pending:
            self._process(pending)
        while self._tracker.in_flight and time.monotonic() < deadline:
            self.sink.flush(min(0.5, max(0.0, deadline - time.monotonic())))
            self._check_deliveries()
        self._finish_completed()
        self._commit(final=True)
        left = self._tracker.in_flight
        if left:
            log.error("drain timed out with %d outputs unacknowledged; their offsets stay uncommitted", left)
        return left == 0

    # -- one batch --------------------------------------------------------------------------

    def _process(self, batch: Sequence[SourceMessage]) -> None:
        if self._transactional and not self._in_transaction:
            self.sink.begin_transaction()
            self._in_transaction = True
        result = self.scorer.score(batch)
        event_times = np.fromiter((m.timestamp()[1] for m in batch), dtype=np.int64, count=len(batch))
        ticket = Ticket(len(batch), payload=event_times)
        last_offsets: dict[TopicPartition, int] = {}
        counts: dict[TopicPartition, int] = {}
        for m in batch:
            tp = cast(TopicPartition, (m.topic(), m.partition()))
            last_offsets[tp] = cast(int, m.offset())
            counts[tp] = counts.get(tp, 0) + 1
        for tp in last_offsets.keys() - self._restart_at.keys():  # first events since assignment
            self._restart_at[tp] = next(cast(int, m.offset()) for m in batch if (m.topic(), m.partition()) == tp)
        self._tracker.track(ticket, last_offsets, counts)
        ack = ticket.ack
        keys = [batch[row].key() for row in result.scored]
        self.sink.produce_many(self._destination, zip(keys, result.outputs, strict=True), ack)
        for rejection in result.rejections:
            self._dead_letter_one(batch[rejection.index], rejection, ack)
        self._count(batch, result.decisions, result.rejections, result.inference_seconds)

    def _dead_letter_one(self, msg: SourceMessage, rejection: Rejection, ack: object) -> None:
        value = msg.value()
        try:
            headers: Headers = list(msg.headers() or [])
        except (UnicodeDecodeError, SystemError):
            # confluent-kafka cannot decode a header name that is not UTF-8: it raises UnicodeDecodeError,
            # or SystemError when a later header follows the bad one
            headers = [("streamscore.headers.dropped", b"a header name is not UTF-8; the input's headers are left out")]
        headers += [
            ("streamscore.reason", rejection.reason.encode()),
            ("streamscore.detail", rejection.detail.encode()),
            ("streamscore.source.topic", str(msg.topic()).encode()),
            ("streamscore.source.partition", str(msg.partition()).encode()),
            ("streamscore.source.offset", str(msg.offset()).encode()),
            ("streamscore.time", str(int(time.time() * 1000)).encode()),
        ]
        if value is not None and len(value) > self.scorer.max_bytes:
            headers.append(("streamscore.value.truncated.from", str(len(value)).encode()))
            value = value[:DEAD_LETTER_SAMPLE_BYTES]
        self.sink.produce(self._dead_letter, msg.key(), value, headers, ack)  # type: ignore[arg-type]

    def _count(self, batch: Sequence[SourceMessage], decisions: np.ndarray,
               rejections: list[Rejection], inference_seconds: float) -> None:
        m, t = self.metrics, self.totals
        m.consumed.inc(len(batch))
        m.scored.inc(decisions.size)
        m.batch_size.observe(len(batch))
        m.inference_seconds.observe(inference_seconds)
        labels = self.scorer.policy.labels
        for label, count in zip(labels, m.count_decisions(labels, decisions), strict=True):
            t.decisions[label] += count
        for reason, count in Counter(r.reason for r in rejections).items():
            m.dead_lettered.labels(reason).inc(count)
        t.consumed += len(batch)
        t.scored += decisions.size
        t.dead_lettered += len(rejections)

    # -- acknowledgements and commits -------------------------------------------------------

    def _finish_completed(self) -> None:
        done = self._tracker.completed()
        if done:
            now_ms = time.time() * 1000.0
            for ticket in done:
                times = ticket.payload
                self.metrics.end_to_end.observe_many((now_ms - times[times > 0]) / 1000.0)
        self.metrics.in_flight.set(self._tracker.in_flight)
        self.metrics.uncommitted.set(self._tracker.uncommitted)

    def _check_deliveries(self) -> None:
        """A refused output stops at-least-once delivery (nothing past it is committed) and aborts
        the open transaction under exactly-once (its work is redone)."""
        error = self._tracker.failure()
        if error is None:
            return
        self.metrics.delivery_failures.inc()
        code = error.code() if hasattr(error, "code") else None
        text = error.str() if hasattr(error, "str") else str(error)
        if self._transactional:
            self._abort(f"an output was not accepted by the broker: {text}")
            return
        raise DeliveryError(f"an output was not accepted by the broker: {text}", code)

    def _commit(self, final: bool = False, quiet: bool = False) -> None:
        """Commit synchronously: a position counts as committed only once the broker confirmed it,
        so a crash can redo at most ``max_in_flight`` events (plus one batch)."""
        if self._transactional:
            self._commit_transaction(final)
            return
        positions = {tp: pos for tp, pos in self._tracker.committable().items() if tp in self._assigned}
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

    def _committed(self, positions: dict[TopicPartition, int], final: bool) -> None:
        self._tracker.mark_committed(positions)
        self._restart_at.update(positions)
        self.metrics.commits.inc()
        if final and positions:
            log.info("committed %s", ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(positions.items())))

    # -- exactly-once -------------------------------------------------------------------------

    def _commit_transaction(self, final: bool) -> None:
        """Flush, then commit the outputs and the positions they came from in one transaction."""
        if not self._in_transaction:
            return
        left = self.sink.flush(self.settings.batching.drain_timeout_s)
        self._check_deliveries()  # aborts the transaction if an output was refused
        if not self._in_transaction:
            return
        if left:
            self._abort(f"{left} outputs not acknowledged within drain_timeout_s")
            return
        positions = {tp: pos for tp, pos in self._tracker.committable().items() if tp in self._assigned}
        try:
            self.sink.commit_transaction(positions, self.source.group_metadata())
        except TransactionAborted as exc:
            self.metrics.commit_failures.inc()
            self._abort(str(exc))
            return
        self._in_transaction = False
        self._aborts_in_a_row = 0
        self._committed(positions, final)

    def _abort(self, why: str, failure: bool = True) -> None:
        """Abort the open transaction and re-read its input: the consumer rewinds every partition
        to where the group would resume, and the open batch and the offset tracker start afresh."""
        if failure:
            self.metrics.transaction_aborts.inc()
            self._aborts_in_a_row += 1
            log.warning("transaction aborted (%s): re-reading its input from the last committed positions", why)
        if self._in_transaction:
            self.sink.abort_transaction()
            self._in_transaction = False
        rewind = {tp: pos for tp, pos in self._restart_at.items() if tp in self._assigned}
        for m in self._batcher.take() or []:  # consumed, never scored: they are re-read too
            tp = cast(TopicPartition, (m.topic(), m.partition()))
            if tp in self._assigned:
                rewind.setdefault(tp, cast(int, m.offset()))
        self.source.seek(rewind)
        self._tracker = OffsetTracker()
        if self._aborts_in_a_row >= MAX_ABORTS_IN_A_ROW:
            raise DeliveryError(f"{self._aborts_in_a_row} transactions in a row were aborted; last: {why}")

    def _abort_quietly(self) -> None:
        """On the way out after an error: abort what is open; the next owner redoes it."""
        if self._in_transaction:
            try:
                self.sink.abort_transaction()
            except BrokerError as exc:
                log.warning("could not abort the open transaction (%s); it times out on the broker", exc)
            self._in_transaction = False

    # -- lag -----------------------------------------------------------------------------------

    def _report_lag(self) -> None:
        """Consumer lag per partition: the high watermark from the last fetch minus the position the
        group would resume from. Partitions that delivered nothing since assignment are not reported."""
        marks = self.source.high_watermarks(sorted(self._restart_at))
        for (topic, partition), high in marks.items():
            self.metrics.consumer_lag.labels(topic, str(partition)).set(max(0, high - self._restart_at[(topic, partition)]))

    # -- rebalances (run inside source.poll) ------------------------------------------------

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        self._assigned.update(partitions)
        if self._paused:  # joins paused, like the partitions it joins
            self.source.pause(partitions)
        self.metrics.assigned_partitions.set(len(self._assigned))
        log.info("assigned %s", _names(partitions))

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Finish and commit in-flight work before the partitions are released."""
        log.info("revoked %s: finishing in-flight work before release", _names(partitions))
        if not self._failed:  # after a delivery failure nothing more may be committed past it
            self.drain()
        self._forget(partitions)

    def _on_lost(self, partitions: list[TopicPartition]) -> None:
        """Another member owns them now: drop their unscored events; nothing of theirs is committed."""
        # librdkafka reports partitions lost when the session timed out, and also when the broker refused
        # a commit for a stale generation (a commit racing a rebalance)
        log.warning("lost %s (the group moved on without this member): their uncommitted work will be redone "
                    "elsewhere", _names(partitions))
        if self._transactional:  # the open transaction holds their outputs: abort it, keep the rest
            self._forget(partitions)
            self._abort(f"lost {_names(partitions)}", failure=False)
            return
        lost = set(partitions)
        pending = self._batcher.take() or []
        for batch in self._batcher.add([m for m in pending if (m.topic(), m.partition()) not in lost]):
            self._process(batch)  # never in practice (less than a batch was open), but never dropped
        self._forget(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        self._tracker.forget(partitions)
        self._assigned.difference_update(partitions)
        for tp in partitions:
            if self._restart_at.pop(tp, None) is not None:
                self.metrics.forget_partition(*tp)
        self.metrics.assigned_partitions.set(len(self._assigned))


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(partitions)) or "nothing"
