"""The embedded broker's fetch on partitions of many small record batches: how many records a plain
consumer reads back, from offset 0, with each ``fetch.wait.max.ms``.

    python -m load.tansu_fetch                          # 200,000 records, one per batch, 4 partitions
    python -m load.tansu_fetch --records 500000 --wait-ms 10 100 1000

Tansu 0.6 answers a fetch whose wait ran out before it found the batch at the fetch offset with no
records (and no error), and finding it takes longer the more batches the partition holds: a
consumer with a short wait then reads nothing at all. ``load.peers`` reads outputs back with a
long wait for this reason (``load.peers.READ_FETCH_WAIT_MS``); see docs/performance.md, run 5.
"""

from __future__ import annotations

import argparse
import contextlib
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

from load.kafka_io import produce_one
from streamscore.broker import EmbeddedBroker
from streamscore.engines.kafka_admin import create_topics

VALUE = b'{"score": 0.5, "decision": "approve", "model": "fraud", "version": "1", "id": "' + b"x" * 120 + b'"}'
"""About the size of a score record."""


def write(bootstrap: str, topic: str, records: int, partitions: int) -> None:
    """``records`` records, one record batch each (``batch.num.messages`` 1), round robin."""
    producer = Producer({"bootstrap.servers": bootstrap, "batch.num.messages": 1, "linger.ms": 0})
    for i in range(records):
        produce_one(producer, topic, VALUE, b"%d" % i, partition=i % partitions)
        producer.poll(0)
    if producer.flush(120) != 0:
        raise SystemExit("records not acknowledged")


def read(bootstrap: str, topic: str, partitions: int, records: int, wait_ms: int, timeout: float) -> tuple[int, float]:
    """Records read from offset 0 within ``timeout`` s, and the seconds it took."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"tansu-fetch-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": wait_ms})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    started, read_ = time.monotonic(), 0
    try:
        while read_ < records and time.monotonic() - started < timeout:
            read_ += sum(1 for m in consumer.consume(10_000, 0.25) if m.error() is None)
    finally:
        consumer.close()
    return read_, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--wait-ms", type=int, nargs="+", default=[10, 2000])
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds each read may take")
    parser.add_argument("--bootstrap-servers", default=None, help="default: an embedded broker")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        bootstrap = args.bootstrap_servers or stack.enter_context(EmbeddedBroker()).bootstrap_servers
        topic = f"tansu-fetch-{uuid.uuid4().hex[:6]}"
        create_topics(bootstrap, {topic: args.partitions})
        print(f"writing {args.records:,} records, one per batch, to {args.partitions} partitions ...", flush=True)
        write(bootstrap, topic, args.records, args.partitions)
        for wait_ms in args.wait_ms:
            n, seconds = read(bootstrap, topic, args.partitions, args.records, wait_ms, args.timeout)
            print(f"fetch.wait.max.ms {wait_ms:>5}: {n:,} of {args.records:,} records read in {seconds:.1f} s",
                  flush=True)


if __name__ == "__main__":
    main()
