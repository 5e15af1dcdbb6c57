"""The side-by-side benchmark's read-back (``load.peers.read_outputs``) on the real broker: it reads
a variant's score and dead-letter topics to the end, so a duplicate after the last input counts."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from confluent_kafka import Producer

from load.peers.__main__ import read_outputs
from load.peers.validate import validate
from tests.support import Topics, produce_one

pytestmark = pytest.mark.integration


def test_read_outputs_reads_both_topics_to_the_end_duplicates_included(
        bootstrap: str, topics: Callable[..., Topics]) -> None:
    t = topics(partitions=2)
    score = orjson.dumps({"score": 0.5})
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})  # small batches, as Faust writes
    for i in range(40):
        produce_one(producer, t.destination, score, b"%d" % i, partition=i % 2)
    produce_one(producer, t.destination, score, b"7", partition=1)  # a duplicate, after all 41 inputs
    produce_one(producer, t.dead_letter, b"junk", b"40", partition=0)
    assert producer.flush(30) == 0

    result, _ = validate([b"%d" % i for i in range(41)], read_outputs(bootstrap, t.destination, t.dead_letter))
    assert (result.outputs, result.scored, result.dead_lettered, result.duplicated, result.missing) == (42, 41, 1, 1, 0)
