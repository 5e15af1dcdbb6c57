"""The whole stream loop without a broker, for counting instructions per event (``load.instructions
--scope pipeline``): real ``Pipeline`` steps over the real Kafka edge (``KafkaSource``, ``KafkaSink``)
whose librdkafka clients are replaced by in-memory ones holding real ``confluent_kafka.Message``s.

What it counts per event that the core alone does not: consuming (the source's filter), batching,
the offset tracker, writing outputs and dead letters through the sink, delivery reports, commits
and metrics. What it leaves out: librdkafka's own work (fetching, compression, network) and the broker.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

from confluent_kafka import Message
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streamscore.breaker import Breaker
from streamscore.config import Settings, load_settings
from streamscore.core.batching import Batcher
from streamscore.core.records import SourceMessage
from streamscore.core.scorer import Scorer, ScoringSpec
from streamscore.delivery.committers import build_committer
from streamscore.delivery.deadline import Deadline
from streamscore.destinations.base import Outputs
from streamscore.engines.kafka import KafkaEngine
from streamscore.metrics import Metrics
from streamscore.pipeline import Pipeline
from streamscore.plugins import Plugins
from streamscore.service import assemble

TOPIC = "bench"
PARTITIONS = 4
FETCH_RUN = 500
"""Events of one partition in a row, as librdkafka hands out a fetched batch."""


class MemoryConsumer:
    """The calls ``KafkaSource`` makes of a librdkafka consumer, over messages held in memory."""

    def __init__(self, messages: Sequence[Message]) -> None:
        self._messages = messages
        self._next = 0
        self.committed: dict[tuple[str, int], int] = {}

    @property
    def exhausted(self) -> bool:
        return self._next >= len(self._messages)

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        out = self._messages[self._next:self._next + num_messages]
        self._next += len(out)
        return list(out)

    def commit(self, offsets: list[KafkaTopicPartition], asynchronous: bool) -> list[KafkaTopicPartition]:
        for tp in offsets:
            self.committed[(tp.topic, tp.partition)] = tp.offset
        return offsets

    def get_watermark_offsets(self, tp: KafkaTopicPartition, cached: bool) -> tuple[int, int]:
        return 0, len(self._messages) // PARTITIONS

    def pause(self, partitions: list[KafkaTopicPartition]) -> None:
        """Nothing to stop: consume hands out what is asked for."""

    def resume(self, partitions: list[KafkaTopicPartition]) -> None:
        """Nothing to restart."""


class MemoryProducer:
    """The calls ``KafkaSink`` makes of a librdkafka producer: every record is acknowledged at the
    next ``poll`` or ``flush``."""

    def __init__(self) -> None:
        self._reports: list[Any] = []
        self.produced = 0

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                headers: Any = None, on_delivery: Any = None) -> None:
        self._reports.append(on_delivery)
        self.produced += 1

    def poll(self, timeout: float) -> int:
        reports, self._reports = self._reports, []
        for report in reports:
            report(None, None)
        return len(reports)

    def flush(self, timeout: float) -> int:
        self.poll(timeout)
        return 0


def messages(values: Sequence[bytes]) -> list[Message]:
    """Keyed messages spread over the partitions in runs of ``FETCH_RUN``, offsets counting per partition."""
    out: list[Message] = []
    offsets = [0] * PARTITIONS
    for i, value in enumerate(values):
        partition = (i // FETCH_RUN) % PARTITIONS
        out.append(Message(topic=TOPIC, partition=partition, offset=offsets[partition], key=f"k{i}".encode(),
                           value=value, headers=None, timestamp=(1, 1_700_000_000_000 + i)))
        offsets[partition] += 1
    return out


def settings(batch: int) -> Settings:
    base = load_settings(Path(str(files("streamscore.demo") / "config.yaml")), env={})
    model = base.single_model.model_copy(update={"provider": "cpu", "intra_op_threads": 1})
    # commits only when half the window is uncommitted (never by the clock), batches closed by count:
    # the same work whatever the machine's speed
    batching = base.batching.model_copy(update={"max_batch_size": batch, "max_wait_ms": 60_000.0,
                                                "commit_interval_ms": 3_600_000.0})
    return base.model_copy(update={"model": model, "batching": batching})


def build(settings: Settings, consumer: MemoryConsumer, producer: MemoryProducer) -> Pipeline:
    """The service's pipeline (as ``Service.start`` builds it) over the in-memory clients."""
    metrics = Metrics()
    parts = assemble(settings, Plugins.default(), metrics)
    parts.runner.load()
    engine = parts.engine
    assert isinstance(engine, KafkaEngine)
    engine.source._consumer = consumer  # type: ignore[assignment]  # in place of subscribe()
    engine.producer._producer = producer  # type: ignore[assignment]  # in place of start()
    outputs = Outputs(parts.destinations, engine.dead_letters)
    b = settings.batching
    batcher: Batcher[SourceMessage] = Batcher(b.max_batch_size, b.max_wait_ms / 1000.0)
    committer = build_committer(settings.delivery, engine.source, outputs, batcher, metrics, b.drain_timeout_s,
                                engine.transactions)
    pipeline = Pipeline(engine.source, Scorer(ScoringSpec.from_settings(settings), parts.runner), outputs,
                        committer, batcher, Breaker(settings.breaker), b, metrics)
    pipeline._on_assign([(TOPIC, p) for p in range(PARTITIONS)])
    return pipeline


def drain(values: Sequence[bytes], batch: int) -> int:
    """Run the loop until every event is consumed, scored, acknowledged and committed; returns
    the number of outputs (score records and dead letters) written."""
    consumer, producer = MemoryConsumer(messages(values)), MemoryProducer()
    pipeline = build(settings(batch), consumer, producer)
    while not consumer.exhausted:
        pipeline.step()
    pipeline.committer.settle(Deadline(3600.0))
    if pipeline.committer.tracker.uncommitted:
        raise SystemExit(f"{pipeline.committer.tracker.uncommitted} events left uncommitted")
    return producer.produced

