"""source -> batcher -> scorer -> destinations -> committer: the stream loop, and nothing else.

Single-threaded by design: librdkafka does the network I/O on its own threads, and this loop
consumes, scores, writes, serves acknowledgements and commits in turn. Delivery runs ahead of
commits: the next batch is consumed while earlier outputs are in flight, up to ``max_in_flight``
uncommitted events. The committer owns the commit protocol of the delivery mode; the breaker holds
the stream while the model itself fails. Every step of a stop or a revoke spends one deadline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from operator import methodcaller

from streamscore.breaker import Breaker
from streamscore.config import BatchingSettings
from streamscore.core.batching import Batcher
from streamscore.core.records import ScoredBatch, SourceMessage, TopicPartition
from streamscore.core.scorer import Scorer
from streamscore.delivery.committers import Committer
from streamscore.delivery.deadline import Deadline
from streamscore.delivery.pausing import Pausing
from streamscore.destinations.base import Outputs
from streamscore.engines.base import Source
from streamscore.errors import ModelUnavailable
from streamscore.intake import Intake
from streamscore.metrics import Metrics
from streamscore.monitoring.drift import DriftMonitor
from streamscore.server import Health

log = logging.getLogger(__name__)

COMMIT_EARLY_FRACTION = 0.5
"""A commit is due, whatever the interval, once this share of the window is uncommitted."""

_key = methodcaller("key")

EXIT_MARGIN = 0.1
"""Seconds of the stop bound kept for the exit itself (closing clients, returning)."""


class Pipeline:
    def __init__(self, source: Source, scorer: Scorer, outputs: Outputs, committer: Committer,
                 batcher: Batcher[SourceMessage], breaker: Breaker, batching: BatchingSettings,
                 metrics: Metrics, health: Health | None = None, leave_timeout: float = 10.0,
                 drift: DriftMonitor | None = None, between_batches: Callable[[], None] | None = None) -> None:
        self.source = source
        self.scorer = scorer
        self.outputs = outputs
        self.committer = committer
        self.batcher = batcher
        self.breaker = breaker
        self.batching = batching
        self.metrics = metrics
        self.health = health or Health()
        self.between_batches = between_batches
        """Called at the start of every turn, when no batch is being scored (a model swap goes here)."""
        self.leave_timeout = leave_timeout
        """How long leaving the group may take (the session timeout: then the group evicts us anyway)."""
        self.drift = drift
        """Counts the scored rows' feature and score bins, when the model has a reference profile."""
        self.totals = committer.totals  # the committer adds the dead letters of outputs refused as too large
        self.totals.decisions = dict.fromkeys(scorer.policy.labels, 0)
        self._commit_interval = batching.commit_interval_ms / 1000.0
        self._commit_early_at = batching.max_in_flight * COMMIT_EARLY_FRACTION
        self._next_commit = 0.0
        self._failed = False
        self.pausing = Pausing(source, batching.max_in_flight, metrics)
        self.intake = Intake(source, batcher, batching.adaptive)

    @property
    def assigned(self) -> frozenset[TopicPartition]:
        """Source partitions this instance owns now."""
        return frozenset(self.committer.assigned)

    def run(self, stop: threading.Event) -> bool:
        """Consume and score until ``stop`` is set, then drain and commit within ``drain_timeout_s``.

        Returns True when every output was acknowledged. Raises on a fatal failure (a refused output,
        a model down past ``breaker.max_outage_s``) after committing only what is safe to commit.
        """
        self.start()
        stopping: Deadline | None = None
        try:
            while not stop.is_set():
                self.step()
            self.health.ready = False
            # one budget from here to the exit: the drain's share, then leaving the group
            stopping = Deadline(self.batching.drain_timeout_s + self.leave_timeout - EXIT_MARGIN)
            return self.drain(Deadline(self.batching.drain_timeout_s))
        except BaseException:
            self._failed = True
            self.health.ready = False
            self.committer.fail()
            raise
        finally:
            self.source.close(self.leave_timeout if stopping is None else stopping.remaining())

    def start(self) -> None:
        """Join the consumer group; ``run`` calls it, tests driving ``step`` call it themselves."""
        self.source.subscribe(self._on_assign, self._on_revoke, self._on_lost)
        self.health.ready = True

    def step(self) -> None:
        """One turn: consume, score due batches, serve acknowledgements, commit.

        When the window is full, or the model is down, the source partitions are paused rather than
        left unpolled: polling goes on (the consumer stays in its group and rebalances are served).
        """
        self.health.beat()
        self.committer.check()
        uncommitted = self.committer.tracker.uncommitted
        window_full = uncommitted >= self.batching.max_in_flight
        self.pausing.update(sorted(self.committer.assigned), uncommitted, self.breaker.open)
        if self.between_batches is not None:
            self.between_batches()
        if self.breaker.retry_due:
            self._retry()
        self._consume_once()
        self.outputs.poll(0.05 if window_full else 0)
        self.committer.finish_completed()
        # commit as soon as half the window is uncommitted, so that a backlog never fills it
        if uncommitted >= self._commit_early_at or time.monotonic() >= self._next_commit:
            self.committer.commit()
            self.committer.report_lag()
            self._next_commit = time.monotonic() + self._commit_interval

    def drain(self, deadline: Deadline) -> bool:
        """Score the open batch, wait for every output, commit. True if all were acknowledged."""
        pending = self.batcher.take()
        if pending:
            self._score_all([pending])
        return self.committer.settle(deadline)

    def _consume_once(self) -> None:
        if self.breaker.open:  # keep what still arrives; nothing is scored until a retry succeeds
            self.intake.hold()
            return
        self._score_all(self.intake.batches())

    # -- one batch --------------------------------------------------------------------------

    def _score_all(self, batches: Sequence[Sequence[SourceMessage]]) -> None:
        """Score batches in order; once the model is down, the rest go back, in order, in front of
        the unscored events (never behind later ones: offsets are committed in consumption order)."""
        for i, batch in enumerate(batches):
            if self.breaker.open or not self._score(batch):
                self.batcher.restore([m for held in batches[i:] for m in held])
                return

    def _score(self, batch: Sequence[SourceMessage]) -> bool:
        """False, with the breaker tripped, when the model itself failed (the batch is not emitted)."""
        try:
            result = self.scorer.score(batch)
        except ModelUnavailable as exc:
            self._model_down(exc)
            return False
        self._emit(batch, result)
        return True

    def _emit(self, batch: Sequence[SourceMessage], result: ScoredBatch) -> None:
        self.committer.begin()
        ticket = self.committer.track(batch, self.outputs.records_for(result), result)
        keys = list(map(_key, map(batch.__getitem__, result.scored)))
        letters = [self.scorer.dead_letter(batch[r.index], r, self.source.headers(batch[r.index]))
                   for r in result.rejections]
        self.outputs.write(keys, result, letters, ticket.ack)
        labels = self.scorer.policy.labels
        if self.drift is not None and result.features is not None:
            self.drift.observe(result.features, result.scores)
        self.totals.add(len(batch), result, labels, self.metrics.count_batch(len(batch), result, labels))

    # -- the model breaker ----------------------------------------------------------------------

    def _model_down(self, error: ModelUnavailable) -> None:
        self.metrics.model_failures.inc()
        self.metrics.breaker_open.set(1)
        self.health.ready = False
        self.breaker.trip(error)  # raises once the outage outlasts breaker.max_outage_s

    def _retry(self) -> None:
        """Score the first held batch (or probe the model when none is held); resume on success."""
        batch = self.batcher.take(self.batcher.max_size)
        try:
            result = self.scorer.score(batch) if batch else None
            if batch is None:
                self.scorer.probe()
        except ModelUnavailable as exc:
            self.batcher.restore(batch or [])
            self._model_down(exc)
            return
        self.breaker.close()
        self.metrics.breaker_open.set(0)
        self.health.ready = True
        if batch and result is not None:
            self._emit(batch, result)

    # -- rebalances (run inside source.poll) ------------------------------------------------

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        self.committer.assign(partitions)
        self.pausing.joined(partitions)
        log.info("assigned %s", _names(partitions))

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Finish and commit in-flight work before the partitions are released."""
        log.info("revoked %s: finishing in-flight work before release", _names(partitions))
        try:
            if not self._failed:  # after a delivery failure nothing more may be committed past it
                self.drain(Deadline(self.batching.drain_timeout_s))
        finally:
            self.committer.forget(partitions)

    def _on_lost(self, partitions: list[TopicPartition]) -> None:
        """Another member owns them now: nothing of theirs is committed; their work is redone there."""
        # librdkafka reports partitions lost when the session timed out, and also when the broker refused
        # a commit for a stale generation (a commit racing a rebalance)
        log.warning("lost %s (the group moved on without this member): their uncommitted work will be redone "
                    "elsewhere", _names(partitions))
        self.committer.lost(partitions)


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(partitions)) or "nothing"
