"""Kafka I/O shared by the load tools, the fault harness and the tests: producing with retry on a
full local queue, and reading a service's outputs back by condition, never by a quiet period.

The tests import this module (through ``tests.support``); nothing here imports from ``tests``.

How ``OutputReader.read_to_end`` knows that nothing more is coming: it is called once every
process that writes to the topics has exited, so each partition's log is final. It reads until,
for every partition, the consumer has reported end-of-partition (librdkafka's ``_PARTITION_EOF``,
emitted when a fetch at the consumer's position returns nothing and the position equals the high
watermark *of that fetch response*) at an offset no lower than the high watermark of a fresh
ListOffsets query made after the writers exited. Both halves are needed on the embedded broker
(Tansu): its ListOffsets answer is the base offset of the last record batch plus one, lower than
the true end, while its fetch responses carry the true end. An end-of-partition event seen before
the last writes (the reader may run while the service works) does not count: its offset is below
the fresh high watermark, so the reader goes on to the next one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

Headers = Sequence[tuple[str, bytes | None]]
DeliveryCallback = Callable[[Any, Any], None]

RETRY_INTERVAL = 0.05
"""Seconds a producer serves delivery reports when its local queue is full, before trying again."""


def produce_one(producer: Producer, topic: str, value: bytes | None, key: bytes | None = None, *,
                headers: Headers | None = None, partition: int | None = None,
                on_delivery: DeliveryCallback | None = None, timestamp_ms: int | None = None) -> None:
    """Hand one record to ``producer``; while its local queue is full (``BufferError``), serve
    delivery reports for ``RETRY_INTERVAL`` seconds and try again. Flushing is the caller's."""
    kwargs: dict[str, Any] = {}
    if timestamp_ms is not None:
        kwargs["timestamp"] = timestamp_ms
    if headers is not None:
        kwargs["headers"] = list(headers)
    if partition is not None:
        kwargs["partition"] = partition
    if on_delivery is not None:
        kwargs["on_delivery"] = on_delivery
    while True:
        try:
            producer.produce(topic, value, key, **kwargs)
            return
        except BufferError:
            producer.poll(RETRY_INTERVAL)


def consume_ready(consumer: Consumer, max_messages: int, timeout: float) -> list[Message]:
    """Up to ``max_messages``, back as soon as one is there: ``consume(n, timeout)`` alone waits for
    all ``n`` or the whole ``timeout`` (librdkafka's batch consume), which adds up to ``timeout`` to
    every latency read through it. Error events are left in for the caller."""
    first = consumer.consume(1, timeout)
    if not first or max_messages <= 1:
        return first
    return first + consumer.consume(max_messages - 1, 0)


class ReadTimeout(AssertionError):
    """An output reader's condition did not hold within its timeout."""


@dataclass(frozen=True, slots=True)
class Record:
    """One record read back, headers in their order on the wire."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    header_list: tuple[tuple[str, bytes | None], ...]

    @property
    def headers(self) -> dict[str, bytes]:
        """The headers by name; a later header wins over an earlier one of the same name, and a
        header without a value reads as ``b""``."""
        return {name: value or b"" for name, value in self.header_list}


class OutputReader:
    """Reads ``topics`` from their first offset with a consumer of its own (no group commits).

    ``read_until`` reads while the service still runs, until a condition on what was read holds
    (a known count, a known set of keys). ``read_to_end`` reads the rest once every writer has
    exited (see the module docstring for its end condition). ``records`` holds everything read.
    """

    def __init__(self, bootstrap: str, topics: Sequence[str], client: Mapping[str, str] | None = None,
                 fetch_wait_ms: int = 100) -> None:
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.client = dict(client or {})
        """Extra librdkafka settings (TLS, say)."""
        self.fetch_wait_ms = fetch_wait_ms
        """``fetch.wait.max.ms``: how long the broker may hold a fetch. Short, so a read that waits
        for a condition sees new records soon; on the embedded broker a topic written in tens of
        thousands of small batches needs a longer one (see ``load.peers.READ_FETCH_WAIT_MS``)."""
        self.records: list[Record] = []
        self._consumer: Consumer | None = None
        self._partitions: list[TopicPartition] = []
        self._eof_at: dict[tuple[str, int], int] = {}

    def start(self) -> Self:
        consumer = Consumer({
            "bootstrap.servers": self.bootstrap, **self.client,
            "group.id": f"output-reader-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
            "enable.partition.eof": True, "fetch.wait.max.ms": self.fetch_wait_ms,
        })
        meta = consumer.list_topics(timeout=10).topics
        self._partitions = [TopicPartition(name, p) for name in self.topics for p in sorted(meta[name].partitions)]
        consumer.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in self._partitions])
        self._consumer = consumer
        return self

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def read_until(self, condition: Callable[[list[Record]], bool], timeout: float, what: str) -> list[Record]:
        """Read until ``condition(records)`` holds; ``ReadTimeout`` naming ``what`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not condition(self.records):
            if time.monotonic() >= deadline:
                raise ReadTimeout(f"timed out after {timeout:g}s waiting for {what} ({len(self.records)} records read)")
            self._poll()
        return self.records

    def read_to_end(self, timeout: float = 60.0) -> list[Record]:
        """Every record of the topics; call it only once every writer to them has exited."""
        consumer = self._started()
        ends = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1]
                for tp in self._partitions}

        def at_end(_: list[Record]) -> bool:
            return all(self._eof_at.get(tp, -1) >= end for tp, end in ends.items())

        return self.read_until(at_end, timeout, f"the end of {', '.join(self.topics)} (high watermarks {ends})")

    def _poll(self) -> None:
        for msg in self._started().consume(10_000, 0.2):
            self._take(msg)

    def _take(self, msg: Message) -> None:
        err = msg.error()
        topic, partition, offset = str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)
        if err is None:
            headers = cast("list[tuple[str, bytes | None]] | None", msg.headers())  # a list, as consumed
            self.records.append(Record(topic, partition, offset, msg.key(), msg.value(), tuple(headers or ())))
        elif err.code() == KafkaError._PARTITION_EOF:
            self._eof_at[(topic, partition)] = offset
        elif err.fatal():
            raise KafkaException(err)
        # anything else (a broker connection dropped ...) librdkafka retries by itself

    def _started(self) -> Consumer:
        if self._consumer is None:
            raise RuntimeError("OutputReader not started: use it as a context manager or call start()")
        return self._consumer
