"""Test-side Kafka helpers: produce inputs, read outputs back, read committed offsets.

Counts come from consuming records, never from end offsets: the embedded broker reports a
partition's high watermark (ListOffsets) as the base offset of its last record batch plus one.
Outputs are read with ``OutputReader`` (``load.kafka_io``): while a service runs, until a known
count or set of keys arrived; after it exited, to the end of every partition (``stop_and_read``).
"""

from __future__ import annotations

import signal
import warnings
from collections.abc import Iterable, Sequence
from typing import Self

from confluent_kafka import Consumer, Producer, TopicPartition

from load.faults.harness import ServiceProcess
from load.kafka_io import OutputReader, ReadTimeout, Record, produce_one

__all__ = ["OutputReader", "ReadTimeout", "Record", "committed", "produce", "produce_one",
           "produce_raw_header_names", "stop_and_read"]

Item = tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]
"""(key, value, headers) of one input."""
RawItem = tuple[bytes, bytes, list[tuple[bytes, bytes]]]
"""(key, value, headers) of one input whose header names are bytes."""


def produce(bootstrap: str, topic: str, items: Iterable[Item], partition: int | None = None,
            timestamps: Sequence[int] | None = None) -> int:
    """Produce (key, value, headers) items (with these record timestamps, in ms, if given); returns
    how many were acknowledged."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True,
                         "message.max.bytes": 4_000_000})
    acked = 0

    def on_delivery(err: object, _msg: object) -> None:
        nonlocal acked
        if err is None:
            acked += 1

    for i, (key, value, headers) in enumerate(items):
        produce_one(producer, topic, value, key, headers=headers, partition=partition, on_delivery=on_delivery,
                    timestamp_ms=None if timestamps is None else timestamps[i])
        producer.poll(0)
    assert producer.flush(30) == 0, "inputs not acknowledged by the broker"
    return acked


class _RawName(str):
    """A header name that goes on the wire as the given bytes: kafka-python writes ``name.encode()``."""

    raw: bytes

    def __new__(cls, raw: bytes) -> Self:
        name = super().__new__(cls, raw.decode("latin-1"))
        name.raw = raw
        return name

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


def produce_raw_header_names(bootstrap: str, topic: str, items: Iterable[RawItem],
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


def stop_and_read(reader: OutputReader, *procs: ServiceProcess, timeout: float = 30.0) -> list[Record]:
    """SIGTERM every process still running, check that each (also one that had already exited)
    exits 0, then read ``reader``'s topics to the end: drain duplicates included."""
    for proc in procs:
        if proc.alive():
            proc.signal(signal.SIGTERM)
    for proc in procs:
        code = proc.wait(timeout)
        assert code == 0, f"exit code {code}:\n{proc.log_tail(80)}"
    return reader.read_to_end()


def committed(bootstrap: str, group: str, topic: str, partitions: int, stable: bool = True) -> dict[int, int]:
    """The group's committed next-offset per partition (negative: nothing committed). ``stable``:
    wait until no open transaction holds an offset of the group (a killed transactional writer's
    holds them until it is fenced or times out); else the offsets committed so far, at once."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         "isolation.level": "read_committed" if stable else "read_uncommitted"})
    try:
        result = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in result}
