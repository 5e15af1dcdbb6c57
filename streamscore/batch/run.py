"""``streamscore batch``: score a bounded input (files, or a Kafka topic range) with the same scoring
core as the stream (``Scorer``: decode, features, model graph, decisions, render), so a batch score
equals the live one, and stop with a summary where read = scored + rejected.

input parts -> chunks of ``chunk_rows`` -> Scorer (``batch_rows`` per call) -> a sink -> checkpoint.
A chunk is the unit of resumption: it is skipped when its checkpoint says it is done (a done marker,
or under exactly-once a committed transaction), and rewritten whole otherwise, so a killed run
started again with the same arguments leaves each input once.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np

from streamscore.batch import inputs
from streamscore.batch.checkpoint import Checkpoint, Markers, Transactional
from streamscore.batch.outputs import ChunkSink, DestinationSink, FolderSink, NoDeadLetters
from streamscore.batch.parts import Counts, Part, State
from streamscore.batch.progress import Progress
from streamscore.config import Settings
from streamscore.config.batch import BatchSettings
from streamscore.core.records import DeadLetter, Headers, Rejection, ScoredBatch, SourceMessage
from streamscore.core.scorer import Scorer, ScoringSpec
from streamscore.delivery.committers import MAX_ABORTS_IN_A_ROW
from streamscore.destinations.base import Outputs
from streamscore.engines.base import StreamApp
from streamscore.errors import ConfigError, DeliveryError, StreamScoreError, TransactionAborted
from streamscore.plugins import Plugins

log = logging.getLogger(__name__)


class BatchMessage:
    """A row of a file as the scoring core sees an event: its file is the topic, its row the offset."""

    __slots__ = ("_offset", "_partition", "_topic", "_value")

    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self._topic, self._partition, self._offset, self._value = topic, partition, offset, value

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return None

    def value(self) -> bytes:
        return self._value

    def headers(self) -> Headers | None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)  # no event time: the record's event_time_ms is null


@dataclass
class Summary:
    counts: Counts = field(default_factory=Counts)
    resumed: Counts = field(default_factory=Counts)
    """Of ``counts``: what earlier, killed runs had already written."""
    reasons: dict[str, int] = field(default_factory=dict)
    """Rejections of this run by reason."""

    def line(self) -> str:
        c = self.counts
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items()))
        resumed = f" ({self.resumed.read} of them by an earlier run)" if self.resumed.read else ""
        return (f"read {c.read} = scored {c.scored} + rejected {c.rejected}{resumed}"
                + (f"; rejected by reason: {reasons}" if reasons else ""))


def _source_of(settings: Settings, group: str | None = None) -> Any:
    from streamscore.engines.kafka_range import KafkaRange

    return KafkaRange(settings, group)


def exactly_once(settings: Settings) -> bool:
    """Whether a batch run commits its chunks in Kafka transactions: ``delivery: exactly_once`` with
    the destinations as output (an output folder is exactly-once by itself: its part files are
    replaced whole)."""
    return settings.delivery == "exactly_once" and settings.batch is not None and settings.batch.output is None


def check(settings: Settings) -> None:
    """What ``batch`` refuses before it reads anything (``validate`` refuses it too): ConfigError."""
    if exactly_once(settings) and settings.batch is not None and settings.batch.input.files:
        raise ConfigError("delivery: exactly_once: 'streamscore batch' writes file inputs to the destinations at "
                          "least once (only a batch.input.kafka topic range commits its progress in the "
                          "transaction); use delivery: at_least_once or an output folder")


class BatchRun:
    """One run of ``settings.batch``; ``run`` returns its summary."""

    def __init__(self, settings: Settings, plugins: Plugins | None = None, progress: bool | None = None) -> None:
        if settings.batch is None:
            raise ConfigError("batch: required key is missing (what to score and where to write it)")
        check(settings)
        self.settings = settings
        self.batch: BatchSettings = settings.batch
        self.plugins = plugins or Plugins.default()
        self.progress = progress
        output = None if self.batch.output is None else Path(self.batch.output)
        self.state = State(Path(self.batch.state) if self.batch.state else (output or Path()) / "_streamscore")
        self._range: Any = None
        self.share = (0, 1)
        """(this worker, of how many): this run scores the parts whose index mod the second is the first."""

    def _identity(self) -> dict[str, Any]:
        identity = {"input": self.batch.input.model_dump(mode="json"), "chunk_rows": self.batch.chunk_rows}
        if exactly_once(self.settings):  # its progress is in Kafka, not in done markers: never mixed with those
            identity["delivery"] = "exactly_once"
            # a worker's transactional id fences only the same worker's killed predecessor
            identity["workers"] = self.batch.workers
        return identity

    def _progress_group(self) -> str:
        """Exactly-once: the group the run's transactions commit its positions to (never joined)."""
        return f"{self.settings.kafka.group_id}-batch-{self.state.run_id}"

    def _transactional_id(self) -> str:
        """Exactly-once: stable for this state folder and worker, so a restart fences the killed run's
        producer and aborts the transaction it left open (before the progress group is read)."""
        base = self.settings.kafka.transactional_id or f"streamscore-{self.settings.kafka.group_id}"
        folder = hashlib.sha256(str(self.state.folder.resolve()).encode()).hexdigest()[:12]
        return f"{base}-batch-{folder}-{self.share[0]}"

    def _run_workers(self, stop: threading.Event) -> Summary:
        """``workers`` processes, each scoring its share of the plan (saved here first, so they all
        read the same one); their summaries summed. A stop is passed on to each as SIGTERM."""
        try:
            self.state.load_or_save(self._identity(), self._plan)
        finally:
            if self._range is not None:
                self._range.close()
                self._range = None
        n = self.batch.workers
        context = multiprocessing.get_context("spawn")  # no librdkafka or onnxruntime threads forked
        results = context.Queue()
        procs = [context.Process(target=_worker, args=(self.settings, w, n, results, logging.getLogger().level),
                                 name=f"streamscore-batch-{w}") for w in range(n)]
        for p in procs:
            p.start()
        summary, received, signalled = Summary(), 0, False
        try:
            while received < n:
                if stop.is_set() and not signalled:
                    signalled = True
                    for p in procs:
                        p.terminate()
                try:
                    part: Summary | None = results.get(timeout=0.5)
                except queue.Empty:
                    failed = [p.name for p in procs if p.exitcode not in (None, 0)]
                    if failed and not signalled:
                        raise StreamScoreError(f"batch: worker {', '.join(failed)} failed (see its log); "
                                               f"the next run with the same arguments resumes") from None
                    if signalled and all(p.exitcode is not None for p in procs):
                        break
                    continue
                received += 1
                if part is not None:
                    summary.counts += part.counts
                    summary.resumed += part.resumed
                    for reason, count in part.reasons.items():
                        summary.reasons[reason] = summary.reasons.get(reason, 0) + count
        finally:
            for p in procs:
                if p.is_alive() and received < n:
                    p.terminate()
                p.join(30)
        return summary

    def run(self, stop: threading.Event | None = None) -> Summary:
        stop = stop or threading.Event()
        if self.batch.workers > 1 and self.share == (0, 1):
            return self._run_workers(stop)
        from streamscore.service import assemble, build_runner

        b = self.batch
        rejects = None if b.rejects is None else Path(b.rejects)
        engine, outputs = None, None
        transactional = exactly_once(self.settings)
        if b.output is None:
            settings = self.settings
            if transactional:
                kafka = settings.kafka.model_copy(update={"transactional_id": self._transactional_id()})
                settings = settings.model_copy(update={"kafka": kafka})
            parts_ = assemble(settings, self.plugins)
            if isinstance(parts_.engine, StreamApp):
                raise ConfigError(f"engine: batch scoring reads and writes with 'confluent-kafka', not "
                                  f"{self.settings.engine!r} (a stream engine)")
            # the broker is needed for a kafka destination, or for the dead letters without a rejects folder
            if rejects is None or any(d.kind == "kafka" for d in self.settings.outputs):
                engine = parts_.engine
            letters = parts_.engine.dead_letters if rejects is None else NoDeadLetters()
            runner, outputs = parts_.runner, Outputs(parts_.destinations, letters)
            sink: ChunkSink = DestinationSink(outputs, rejects)
        else:
            runner = build_runner(self.settings, self.plugins)
            sink = FolderSink(Path(b.output), b.format, rejects)
        runner.load()
        try:
            if engine is not None:
                engine.check(30.0)
                engine.producer.start()
            if outputs is not None:
                outputs.start()
            checkpoint: Checkpoint = Markers(self.state)
            parts = self.state.load_or_save(self._identity(), self._plan)
            if transactional:
                assert engine is not None and engine.transactions is not None
                checkpoint = Transactional(self.state, engine.transactions, self._source(self._progress_group()),
                                           b.chunk_rows, self.settings.batching.drain_timeout_s)
            scorer = Scorer(ScoringSpec.from_settings(self.settings), runner)
            return self._run(parts, scorer, sink, checkpoint, stop)
        finally:
            sink.close()
            if engine is not None:
                engine.producer.close()
            if self._range is not None:
                self._range.close()
            runner.close()

    def _plan(self) -> list[Part]:
        b = self.batch
        if b.input.kafka is not None:
            self._range = _source_of(self.settings)
            return [Part(topic, partition, "kafka", first, end, end - first)
                    for topic, partition, first, end in self._range.plan(b.input.kafka)]
        parts = []
        for path in inputs.expand(b.input.files):
            fmt = inputs.format_of(path, b.input.format)
            parts.append(Part(path, 0, fmt, rows=inputs.count_rows(path, fmt)))
        return parts

    def _source(self, group: str | None = None) -> Any:
        """The topic range's reader, under ``group`` (a reader of the plan's, under another, is replaced)."""
        if self._range is not None and self._range.group != group:
            self._range.close()
            self._range = None
        if self._range is None:
            self._range = _source_of(self.settings, group)
        return self._range

    def _run(self, parts: list[Part], scorer: Scorer, sink: ChunkSink, checkpoint: Checkpoint,
             stop: threading.Event) -> Summary:
        if self.batch.input.kafka is not None and self._range is None:
            self._source()
        worker, workers = self.share
        mine = [(index, part) for index, part in enumerate(parts) if index % workers == worker]
        done = checkpoint.done(mine)
        summary = Summary()
        for counts in done.values():
            summary.counts += counts
            summary.resumed += counts
        total = sum(p.rows or 0 for _, p in mine) if all(p.rows is not None for _, p in mine) else None
        with Progress(total, summary.resumed.read, self.progress) as progress:
            for index, part in mine:
                for chunk, messages in self._chunks(part, done, index):
                    if stop.is_set():
                        log.info("stopped: the next run with the same arguments resumes here")
                        return summary
                    counts = self._checkpointed(scorer, sink, checkpoint, index, part, chunk, messages, summary)
                    summary.counts += counts
                    progress.advance(counts.read)
        return summary

    def _chunks(self, part: Part, done: dict[tuple[int, int], Counts],
                index: int) -> Iterator[tuple[int, Sequence[SourceMessage]]]:
        """The chunks of ``part`` not done yet, as messages for the scorer."""
        size = self.batch.chunk_rows
        if part.format == "kafka":
            assert part.end is not None
            for chunk, first in enumerate(range(part.first, part.end, size)):
                if (index, chunk) not in done:
                    yield chunk, self._range.read(part.source, part.partition, first, min(part.end, first + size))
            return
        for chunk, build in inputs.chunks(part.source, part.format, size):
            if (index, chunk) not in done:
                base = chunk * size
                yield chunk, [BatchMessage(part.source, part.partition, base + i, value)
                              for i, value in enumerate(build())]

    def _checkpointed(self, scorer: Scorer, sink: ChunkSink, checkpoint: Checkpoint, index: int, part: Part,
                      chunk: int, messages: Sequence[SourceMessage], summary: Summary) -> Counts:
        """Score and write one chunk, then make it done; a transaction Kafka says to abort is aborted
        and the chunk redone (``MAX_ABORTS_IN_A_ROW`` times at most, as in the stream)."""
        for attempt in count(1):
            reasons: dict[str, int] = {}
            checkpoint.begin()
            try:
                counts = self._score_chunk(scorer, sink, index, chunk, messages, reasons)
                checkpoint.commit(index, part, chunk, counts)
            except TransactionAborted as exc:
                checkpoint.abort()
                if attempt >= MAX_ABORTS_IN_A_ROW:
                    raise DeliveryError(f"{attempt} transactions in a row were aborted; last: {exc}") from None
                log.warning("transaction aborted (%s): part %d chunk %d is redone", exc, index, chunk)
                continue
            except BaseException:
                checkpoint.abort()
                raise
            for reason, n in reasons.items():
                summary.reasons[reason] = summary.reasons.get(reason, 0) + n
            return counts
        raise AssertionError("unreachable")

    def _score_chunk(self, scorer: Scorer, sink: ChunkSink, part: int, chunk: int,
                     messages: Sequence[SourceMessage], reasons: dict[str, int]) -> Counts:
        keys: list[bytes | None] = []
        results: list[ScoredBatch] = []
        letters: list[DeadLetter] = []
        step = self.batch.batch_rows
        for start in range(0, len(messages), step):
            batch = messages[start:start + step]
            result = scorer.score(batch)
            results.append(result)
            keys.extend(batch[row].key() for row in result.scored)
            letters.extend(scorer.dead_letter(batch[r.index], r, _headers(batch[r.index])) for r in result.rejections)
            for r in result.rejections:
                reasons[str(r.reason)] = reasons.get(str(r.reason), 0) + 1
        merged = _merge(results)
        sink.write(part, chunk, keys, merged, letters)
        return Counts(len(messages), len(merged.outputs), len(letters))


def _worker(settings: Settings, worker: int, workers: int, results: Any, level: int) -> None:
    """One of ``workers`` processes: its share of the plan; puts its summary (None: it stopped) on ``results``."""
    from streamscore.signals import stop_on_signals
    from streamscore.workers import die_with_parent

    logging.basicConfig(level=level, format=f"%(asctime)s worker {worker} %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    stop_on_signals(stop)  # before the parent-death signal, which asks for the same clean stop
    die_with_parent()
    parent = multiprocessing.parent_process()
    if parent is not None and not parent.is_alive():
        return  # the parent died before the signal was set up
    run = BatchRun(settings, progress=False)
    run.share = (worker, workers)
    summary = run.run(stop)
    results.put(summary)


def _headers(message: SourceMessage) -> Headers:
    try:
        return list(message.headers() or [])
    except (UnicodeDecodeError, SystemError):  # a header name librdkafka's client cannot decode
        return [("streamscore.headers.dropped", b"a header name is not UTF-8")]


def _merge(results: list[ScoredBatch]) -> ScoredBatch:
    """One chunk's batches as one (the sinks read outputs, rejections and nothing positional)."""
    rejections: list[Rejection] = [r for result in results for r in result.rejections]
    if not results:
        return ScoredBatch([], [], np.zeros(0, np.float32), np.zeros(0, np.intp), [], 0.0)
    return ScoredBatch([], [o for result in results for o in result.outputs],
                       np.concatenate([r.scores for r in results]), np.concatenate([r.decisions for r in results]),
                       rejections, sum(r.inference_seconds for r in results))


def summary_dict(summary: Summary) -> dict[str, Any]:
    return {**asdict(summary.counts), "resumed": asdict(summary.resumed), "reasons": summary.reasons}
