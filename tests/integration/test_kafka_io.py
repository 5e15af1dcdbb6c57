"""The output reader every integration and fault test relies on (``load.kafka_io``), against the
real broker: it must read to the true end of a partition, past the high watermark the embedded
broker reports, and a condition that does not hold must fail, naming what was awaited."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from tests.support import OutputReader, ReadTimeout, Topics, produce_one

pytestmark = pytest.mark.integration


def write(bootstrap: str, topic: str, keys: range, partition: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50})
    for i in keys:
        produce_one(producer, topic, b"v", b"%d" % i, partition=partition)
    assert producer.flush(30) == 0


def test_read_to_end_reads_every_record_and_again_after_more_are_written(
    bootstrap: str, topics: Callable[..., Topics], output_reader: Callable[..., OutputReader],
) -> None:
    t = topics(partitions=2)
    write(bootstrap, t.destination, range(300), partition=0)  # batches of many records: ListOffsets on
    reader = output_reader(t)                                 # the embedded broker ends at the last base
    assert sorted(int(r.key or b"") for r in reader.read_to_end()) == list(range(300))

    write(bootstrap, t.destination, range(300, 350), partition=1)
    write(bootstrap, t.dead_letter, range(350, 360), partition=0)
    records = reader.read_to_end()
    assert sorted(int(r.key or b"") for r in records) == list(range(360))
    assert {(r.topic, r.partition) for r in records} == {(t.destination, 0), (t.destination, 1), (t.dead_letter, 0)}


def test_read_until_fails_naming_what_it_waited_for(
    bootstrap: str, topics: Callable[..., Topics], output_reader: Callable[..., OutputReader],
) -> None:
    t = topics(partitions=1)
    write(bootstrap, t.destination, range(5), partition=0)
    reader = output_reader(t)
    assert len(reader.read_until(lambda records: len(records) >= 5, 30, "5 outputs")) == 5
    with pytest.raises(ReadTimeout, match="6 outputs"):
        reader.read_until(lambda records: len(records) >= 6, 1, "6 outputs")
