"""``streamscore batch``: score a bounded input (files, or a Kafka topic range) with the same scoring
core as the stream (``Scorer``: decode, features, model graph, decisions, render), so a batch score
equals the live one, and stop with a summary where read = scored + rejected.

input parts -> chunks of ``chunk_rows`` -> Scorer (``batch_rows`` per call) -> a sink -> done marker.
A chunk is the unit of resumption: it is skipped when its done marker exists, and rewritten whole
otherwise, so a killed run started again with the same arguments leaves each input once.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamscore.batch import inputs
from streamscore.batch.outputs import ChunkSink, DestinationSink, FolderSink, NoDeadLetters
from streamscore.batch.parts import Counts, Part, State
from streamscore.batch.progress import Progress
from streamscore.config import Settings
from streamscore.config.batch import BatchSettings
from streamscore.core.records import DeadLetter, Headers, Rejection, ScoredBatch, SourceMessage
from streamscore.core.scorer import Scorer, ScoringSpec
from streamscore.destinations.base import Outputs
from streamscore.engines.base import StreamApp
from streamscore.errors import ConfigError, StreamScoreError
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


def _source_of(settings: Settings) -> Any:
    from streamscore.engines.kafka_range import KafkaRange

    return KafkaRange(settings)


class BatchRun:
    """One run of ``settings.batch``; ``run`` returns its summary."""

    def __init__(self, settings: Settings, plugins: Plugins | None = None, progress: bool | None = None) -> None:
        if settings.batch is None:
            raise ConfigError("batch: required key is missing (what to score and where to write it)")
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
        return {"input": self.batch.input.model_dump(mode="json"), "chunk_rows": self.batch.chunk_rows}

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
        if b.output is None:
            parts_ = assemble(self.settings, self.plugins)
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
            return self._run(Scorer(ScoringSpec.from_settings(self.settings), runner), sink, stop)
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

    def _run(self, scorer: Scorer, sink: ChunkSink, stop: threading.Event) -> Summary:
        parts = self.state.load_or_save(self._identity(), self._plan)
        if self.batch.input.kafka is not None and self._range is None:
            self._range = _source_of(self.settings)
        worker, workers = self.share
        mine = [(index, part) for index, part in enumerate(parts) if index % workers == worker]
        done = {key: counts for key, counts in self.state.done().items() if key[0] % workers == worker}
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
                    counts = self._score_chunk(scorer, sink, index, chunk, messages, summary)
                    self.state.mark_done(index, chunk, counts)
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

    def _score_chunk(self, scorer: Scorer, sink: ChunkSink, part: int, chunk: int,
                     messages: Sequence[SourceMessage], summary: Summary) -> Counts:
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
                summary.reasons[str(r.reason)] = summary.reasons.get(str(r.reason), 0) + 1
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
