"""Produce-to-consume latency of a broker alone: the floor under any end-to-end figure.

    python -m load.broker_latency [--broker kafka] [--rate 1000] [--messages 5000] [--pings 200]
    python -m load.broker_latency --broker tansu --broker kafka   # both, one after the other
    python -m load.broker_latency --bootstrap-servers host:9092   # a broker that runs already

``--broker`` starts that broker for the run (tansu, the embedded default, or kafka through
scripts/kafka.sh, after ``scripts/kafka.sh fetch``). No streamscore code runs in the path: a bare
producer and a bare consumer, with streamscore's default client settings (idempotent producer,
``acks=all``, its ``linger.ms``; its consumer defaults), so that the floor is the one the service
stands on. ``--linger-ms`` and ``--fetch-wait-ms`` override them.

Two figures per broker:
- *one at a time*: one message produced, then consumed, before the next (``--pings``): the round
  trip with nothing queued;
- *at a rate*: ``--messages`` at ``--rate`` per second from a paced producer thread, with the time
  from ``produce()`` to its acknowledgement and to its arrival at the consumer.

The consumer takes messages as soon as one is there (``load.kafka_io.consume_ready``): a plain
``consume(n, timeout)`` waits for all ``n`` or the whole timeout, which an earlier version of this
tool added to every latency it reported (seconds on a broker that answers in milliseconds).
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer, Producer

from load.brokers import KINDS, make_broker
from load.kafka_io import consume_ready
from streamscore.config import KafkaSettings
from streamscore.engines.kafka import consumer_config, producer_config
from streamscore.engines.kafka_admin import create_topics

PARTITIONS = 4


def client_configs(bootstrap: str, topic: str, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """streamscore's default consumer and producer settings, with the overrides given."""
    settings = KafkaSettings(bootstrap_servers=bootstrap, group_id=topic, source_topics=[topic],
                             destination_topic=f"{topic}-out", dead_letter_topic=f"{topic}-dlq")
    consumer = consumer_config(settings)
    producer = producer_config(settings, queue_messages=100_000, max_message_bytes=1_000_000)
    if args.fetch_wait_ms is not None:
        consumer["fetch.wait.max.ms"] = args.fetch_wait_ms
    if args.linger_ms is not None:
        producer["linger.ms"] = args.linger_ms
    return consumer, producer


def percentiles(ms: np.ndarray) -> str:
    p50, p99, p999 = np.percentile(ms, [50, 99, 99.9])
    return f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, p99.9 {p999:.1f} ms, max {ms.max():.1f} ms"


def measure(args: argparse.Namespace, bootstrap: str, name: str) -> dict[str, np.ndarray]:
    topic = f"latency-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, {topic: PARTITIONS})
    consumer_conf, producer_conf = client_configs(bootstrap, topic, args)
    consumer = Consumer(consumer_conf)
    consumer.subscribe([topic])
    while not consumer.assignment():
        consumer.poll(0.1)
    producer = Producer(producer_conf)
    try:
        _warm_up(producer, consumer, topic)
        pings = _one_at_a_time(producer, consumer, topic, args.pings)
        ack, arrival = _at_rate(producer, consumer, topic, args.messages, args.rate)
    finally:
        consumer.close()
    print(f"{name}: linger.ms={producer_conf['linger.ms']}, "
          f"fetch.wait.max.ms={consumer_conf.get('fetch.wait.max.ms', 'librdkafka default')}")
    print(f"  one at a time, produce to consume ({len(pings)}): {percentiles(pings)}")
    print(f"  at {args.rate:,.0f}/s, produce to acknowledgement ({len(ack)}): {percentiles(ack)}")
    print(f"  at {args.rate:,.0f}/s, produce to consume ({len(arrival)}): {percentiles(arrival)}")
    return {"one_at_a_time": pings, "ack": ack, "arrival": arrival}


def _one_at_a_time(producer: Producer, consumer: Consumer, topic: str, count: int) -> np.ndarray:
    took = np.empty(count)
    for i in range(count):
        wanted = f"ping-{i}".encode()
        started = time.monotonic()
        producer.produce(topic, wanted)
        producer.poll(0)
        while not any(m.error() is None and m.value() == wanted for m in consume_ready(consumer, 100, 1.0)):
            if time.monotonic() - started > 30:
                raise SystemExit(f"ping {i} not consumed within 30 s")
        took[i] = (time.monotonic() - started) * 1000
    producer.flush(10)
    return took


def _at_rate(producer: Producer, consumer: Consumer, topic: str, count: int,
             rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Message i is produced at start + i / rate (a producer thread that sleeps until each is due);
    its value is i. Times are ``time.monotonic()`` in this one process."""
    sent, acked, arrived = np.full(count, np.nan), np.full(count, np.nan), np.full(count, np.nan)

    def produce() -> None:
        start = time.monotonic()
        for i in range(count):
            wait = start + i / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            sent[i] = time.monotonic()
            producer.produce(topic, str(i).encode(), on_delivery=functools.partial(_ack, i))
            producer.poll(0)
        producer.flush(30)

    def _ack(i: int, err: object, _msg: object) -> None:
        if err is None:
            acked[i] = time.monotonic()

    sender = threading.Thread(target=produce, name="paced-producer")
    sender.start()
    received = 0
    deadline = time.monotonic() + count / rate + 60
    while received < count and time.monotonic() < deadline:
        for msg in consume_ready(consumer, 1000, 0.1):
            if msg.error() is None and not (msg.value() or b"").startswith(b"ping"):
                arrived[int(msg.value() or b"0")] = time.monotonic()
                received += 1
    sender.join()
    return (acked - sent)[~np.isnan(acked)] * 1000, (arrived - sent)[~np.isnan(arrived)] * 1000


def _warm_up(producer: Producer, consumer: Consumer, topic: str, timeout: float = 60.0) -> None:
    """One record per partition, produced and consumed before the timed ones: the first fetch of a
    fresh group (offset lookups) and the producer's first metadata request are not broker latency."""
    for partition in range(PARTITIONS):
        producer.produce(topic, b"warm-up", partition=partition)
    producer.flush(timeout)
    seen: set[int | None] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < PARTITIONS and time.monotonic() < deadline:
        seen.update(m.partition() for m in consume_ready(consumer, 100, 0.1) if m.error() is None)
    if len(seen) < PARTITIONS:
        raise SystemExit(f"warm-up records not consumed within {timeout:g}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1000.0, help="messages/s of the paced run")
    parser.add_argument("--messages", type=int, default=5000, help="messages of the paced run")
    parser.add_argument("--pings", type=int, default=200, help="messages sent one at a time")
    parser.add_argument("--fetch-wait-ms", type=int, default=None, help="default: streamscore's consumer default")
    parser.add_argument("--linger-ms", type=float, default=None, help="default: streamscore's producer default")
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


if __name__ == "__main__":
    main()
