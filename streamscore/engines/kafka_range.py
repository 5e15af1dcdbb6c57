"""A bounded range of Kafka topics for ``streamscore batch``: partitions read with ``assign()``, so no
consumer group is joined and the live service's group is left alone. Nothing is committed, except
under exactly-once, where the run's own progress group holds the positions its transactions
committed (``committed``, ``group_metadata``).

The end of a partition "as it was at start" is found by fetching to the partition's end once
(``enable.partition.eof``): the end-of-partition event carries the true end, which some brokers
(Tansu) report lower in ListOffsets.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streamscore.config import Settings
from streamscore.config.batch import TopicRangeSettings
from streamscore.core.records import SourceMessage
from streamscore.engines.kafka import consumer_config
from streamscore.errors import BrokerError

log = logging.getLogger(__name__)

TIMEOUT = 30.0
"""Seconds a metadata or offsets query, or a fetch that makes no progress, may take."""


def range_consumer_config(settings: Settings, group: str | None = None) -> dict[str, Any]:
    """The service's consumer settings (security and the passthrough maps) under a group of its own
    that is never joined (``assign()`` only): ``<group_id>-batch`` by default, never committed."""
    conf = consumer_config(settings.kafka)
    conf.update({"group.id": group or f"{settings.kafka.group_id}-batch", "enable.partition.eof": True,
                 "auto.offset.reset": "earliest"})
    for key in ("partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms"):
        conf.pop(key, None)
    return conf


class KafkaRange:
    """Plans a topic range (per partition: first and end offset) and reads offset ranges of it."""

    def __init__(self, settings: Settings, group: str | None = None) -> None:
        self.settings = settings
        self.group = group
        self._consumer: Consumer | None = None

    def _client(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(range_consumer_config(self.settings, self.group))
        return self._consumer

    def committed(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The group's committed position of each partition (absent: none). Under librdkafka's default
        ``read_committed`` the broker answers only once no open transaction holds an offset of it."""
        try:
            found = self._client().committed([TopicPartition(t, p) for t, p in partitions], timeout=TIMEOUT)
        except KafkaException as exc:
            err = exc.args[0]
            raise BrokerError(f"batch: the committed positions of group {self.group!r}: {err.str()}",
                              err.code()) from None
        for tp in found:
            if tp.error is not None:
                raise BrokerError(f"batch: the committed position of {tp.topic}[{tp.partition}] in group "
                                  f"{self.group!r}: {tp.error.str()}", tp.error.code())
        return {(tp.topic, tp.partition): int(tp.offset) for tp in found if tp.offset >= 0}

    def group_metadata(self) -> object:
        """For ``send_offsets_to_transaction``: a group that is never joined (generation -1)."""
        return self._client().consumer_group_metadata()

    def plan(self, wanted: TopicRangeSettings) -> list[tuple[str, int, int, int]]:
        """(topic, partition, first offset, end offset) of every partition of the range."""
        consumer = self._client()
        topics = wanted.topics or self.settings.kafka.source_topics
        try:
            metadata = consumer.list_topics(timeout=TIMEOUT)
        except KafkaException as exc:
            raise BrokerError(f"kafka.bootstrap_servers: no broker answered: {exc}") from None
        plan = []
        for topic in topics:
            if topic not in metadata.topics or metadata.topics[topic].error is not None:
                raise BrokerError(f"batch.input.kafka.topics: topic {topic!r} does not exist")
            for partition in sorted(metadata.topics[topic].partitions):
                low, _ = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT)
                end = self._true_end(topic, partition)
                first = self._bound(topic, partition, wanted.start_offset, wanted.start_timestamp_ms, low, end)
                last = self._bound(topic, partition, wanted.end_offset, wanted.end_timestamp_ms, end, end)
                start = max(low, first)
                plan.append((topic, partition, start, max(start, min(last, end))))
        return plan

    def _bound(self, topic: str, partition: int, offset: int | None, timestamp_ms: int | None,
               default: int, end: int) -> int:
        if offset is not None:
            return offset
        if timestamp_ms is None:
            return default
        [found] = self._client().offsets_for_times([TopicPartition(topic, partition, timestamp_ms)], timeout=TIMEOUT)
        return end if found.offset < 0 else int(found.offset)

    def _true_end(self, topic: str, partition: int) -> int:
        """The partition's end now: fetch from the reported high watermark to the end-of-partition event."""
        consumer = self._client()
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT, cached=False)
        consumer.assign([TopicPartition(topic, partition, max(0, high - 1))])
        try:
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline:
                for msg in consumer.consume(1000, 0.5):
                    err = msg.error()
                    if err is not None and err.code() == KafkaError._PARTITION_EOF:
                        return max(high, int(msg.offset() or 0))
                    if err is not None and err.fatal():
                        raise BrokerError(f"{topic}[{partition}]: {err.str()}", err.code())
                    if err is None:
                        high = max(high, int(msg.offset() or 0) + 1)
            raise BrokerError(f"{topic}[{partition}]: its end was not reached within {TIMEOUT:g}s")
        finally:
            consumer.unassign()

    def read(self, topic: str, partition: int, first: int, end: int) -> list[SourceMessage]:
        """Every event of ``topic[partition]`` with ``first <= offset < end``."""
        consumer = self._client()
        consumer.assign([TopicPartition(topic, partition, first)])
        out: list[Message] = []
        try:
            position, deadline = first, time.monotonic() + TIMEOUT
            while position < end:
                if time.monotonic() > deadline:
                    raise BrokerError(f"{topic}[{partition}]: no progress at offset {position} within {TIMEOUT:g}s")
                for msg in consumer.consume(min(10_000, end - position), 0.5):
                    err = msg.error()
                    if err is None:
                        offset = int(msg.offset() or 0)
                        if offset < end:
                            out.append(msg)
                        position = offset + 1
                    elif err.code() == KafkaError._PARTITION_EOF:
                        position = max(position, int(msg.offset() or 0))  # past transaction markers and gaps
                    elif err.fatal():
                        raise BrokerError(f"{topic}[{partition}]: {err.str()}", err.code())
                    deadline = time.monotonic() + TIMEOUT
        finally:
            consumer.unassign()
        return out  # type: ignore[return-value]  # confluent_kafka.Message is a SourceMessage

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
