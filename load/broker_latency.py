"""Produce-to-consume latency of a broker alone: the floor under any end-to-end figure.

    python -m load.broker_latency [--fetch-wait-ms 10] [--messages 2000] [--bootstrap-servers host:9092]

A bare producer sends timestamped messages at 1 ms intervals; a bare consumer reports how long
each took to arrive. No streamscore code is involved.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
import uuid

import numpy as np
from confluent_kafka import Consumer, Producer

from streamscore.broker import EmbeddedBroker
from streamscore.engines.kafka import create_topics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fetch-wait-ms", type=int, default=10)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--bootstrap-servers", default=None)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        bootstrap = args.bootstrap_servers or stack.enter_context(EmbeddedBroker()).bootstrap_servers
        topic = f"latency-{uuid.uuid4().hex[:6]}"
        create_topics(bootstrap, {topic: 4})
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest",
                             "session.timeout.ms": 6000, "fetch.wait.max.ms": args.fetch_wait_ms})
        consumer.subscribe([topic])
        while not consumer.assignment():
            consumer.poll(0.1)
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})

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
    print(f"fetch.wait.max.ms={args.fetch_wait_ms}: p50 {np.percentile(ms, 50):.1f} ms, "
          f"p99 {np.percentile(ms, 99):.1f} ms, max {ms.max():.1f} ms over {len(ms)} messages")


if __name__ == "__main__":
    main()
