"""Produce-to-consume latency of a broker alone: the floor under any end-to-end figure.

    python -m load.broker_latency [--fetch-wait-ms 10] [--messages 2000] [--bootstrap-servers host:9092]
    python -m load.broker_latency --broker tansu --broker kafka   # both, one after the other

``--broker`` starts that broker for the run (tansu, the embedded default, or kafka through
scripts/kafka.sh, after ``scripts/kafka.sh fetch``).

A bare producer sends timestamped messages at 1 ms intervals; a bare consumer reports how long
each took to arrive. No streamscore code is involved.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, Producer

from load.brokers import KINDS, make_broker
from streamscore.engines.kafka_admin import create_topics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fetch-wait-ms", type=int, default=10)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--bootstrap-servers", default=None)
    parser.add_argument("--broker", action="append", choices=KINDS, help="broker to start (repeatable; default tansu)")
    args = parser.parse_args()
    if args.bootstrap_servers:
        measure(args, args.bootstrap_servers, "external")
        return
    for kind in args.broker or ["tansu"]:
        with tempfile.TemporaryDirectory(prefix="broker-latency-") as workdir, \
                make_broker(Path(workdir), kind) as broker:
            measure(args, broker.bootstrap_servers, kind)


def measure(args: argparse.Namespace, bootstrap: str, name: str) -> None:
    topic = f"latency-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, {topic: 4})
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest",
                         "session.timeout.ms": 6000, "fetch.wait.max.ms": args.fetch_wait_ms})
    consumer.subscribe([topic])
    while not consumer.assignment():
        consumer.poll(0.1)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    _warm_up(producer, consumer, topic, partitions=4)

    def produce() -> None:
        for _ in range(args.messages):
            producer.produce(topic, str(time.time()).encode())
            producer.poll(0)
            time.sleep(0.001)
        producer.flush(10)

    sender = threading.Thread(target=produce)
    sender.start()
    latencies: list[float] = []
    while len(latencies) < args.messages:
        latencies.extend((time.time() - float(msg.value() or b"nan")) * 1000
                         for msg in consumer.consume(1000, 0.1) if msg.error() is None)
    sender.join()
    consumer.close()
    ms = np.array(latencies)
    print(f"{name}: fetch.wait.max.ms={args.fetch_wait_ms}: p50 {np.percentile(ms, 50):.1f} ms, "
          f"p99 {np.percentile(ms, 99):.1f} ms, max {ms.max():.1f} ms over {len(ms)} messages")


def _warm_up(producer: Producer, consumer: Consumer, topic: str, partitions: int, timeout: float = 60.0) -> None:
    """One record per partition, produced and consumed before the timed ones: the first fetch of a
    fresh group (offset lookups) and the producer's first metadata request are not broker latency."""
    for partition in range(partitions):
        producer.produce(topic, b"warm-up", partition=partition)
    producer.flush(timeout)
    seen: set[int | None] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < partitions and time.monotonic() < deadline:
        seen.update(m.partition() for m in consumer.consume(100, 0.1) if m.error() is None)
    if len(seen) < partitions:
        raise SystemExit(f"warm-up records not consumed within {timeout:g}s")


if __name__ == "__main__":
    main()
