"""Test-side Kafka helpers: produce inputs, read outputs back, read committed offsets.

Counts come from consuming records, never from end offsets: the embedded broker reports a
partition's high watermark as the base offset of its last record batch plus one.
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import Consumer, Producer, TopicPartition


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def produce(bootstrap: str, topic: str, items: Iterable[tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]],
            partition: int | None = None) -> int:
    """Produce (key, value, headers) items; returns how many were acknowledged."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True,
                         "message.max.bytes": 4_000_000})
    acked = 0

    def on_delivery(err: object, _msg: object) -> None:
        nonlocal acked
        if err is None:
            acked += 1

    for key, value, headers in items:
        kwargs = {} if partition is None else {"partition": partition}
        while True:
            try:
                producer.produce(topic, value, key, headers=headers, on_delivery=on_delivery, **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(30) == 0, "inputs not acknowledged by the broker"
    return acked


class _RawName(str):
    """A header name that goes on the wire as the given bytes: kafka-python writes ``name.encode()``."""

    raw: bytes

    def __new__(cls, raw: bytes) -> _RawName:
        name = super().__new__(cls, raw.decode("latin-1"))
        name.raw = raw
        return name

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


def produce_raw_header_names(bootstrap: str, topic: str, items: Iterable[tuple[bytes, bytes, list[tuple[bytes, bytes]]]],
                             partition: int = 0) -> None:
    """Produce records whose header names are arbitrary bytes (not UTF-8, say), as other clients
    can; librdkafka's Python producer only takes str names. Uses kafka-python, a pure-Python client."""
    with warnings.catch_warnings():  # kafka-python 3 reads its schemas with a deprecated importlib call
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, api_version=(2, 5), acks="all")
    try:
        for key, value, headers in items:
            named = [(_RawName(name), v) for name, v in headers]
            producer.send(topic, value, key=key, headers=named, partition=partition).get(30)
    finally:
        producer.close()


def consume(bootstrap: str, topics: list[str], expected: int, timeout: float = 60.0, idle: float = 3.0) -> list[Record]:
    """Read topics from the start until ``expected`` records arrived (then ``idle`` more seconds, to
    catch extras) or ``timeout`` passed."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False, "session.timeout.ms": 6000,
    })
    consumer.subscribe(topics)
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    quiet_until: float | None = None
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(5000, 0.2)
            for msg in batch:
                if msg.error() is not None:
                    continue
                records.append(Record(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(),
                                      dict(msg.headers() or [])))
            if len(records) >= expected:
                if quiet_until is None:
                    quiet_until = time.monotonic() + idle
                elif time.monotonic() >= quiet_until:
                    break
    finally:
        consumer.close()
    return records


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed next-offset per partition (negative: nothing committed)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        result = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in result}
