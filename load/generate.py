"""Load generator: synthetic card transactions to a topic at a steady rate (or flat out).

    python -m load.generate --bootstrap-servers 127.0.0.1:9092 --topic transactions --rate 20000 --duration 60

A token bucket refilled every millisecond holds the rate; each event carries its event time
(and the Kafka timestamp is its produce time), so the latency probe can measure end to end.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import Producer

from load.kafka_io import produce_one
from streamscore.demo.transactions import TransactionGenerator


@dataclass
class GeneratorStats:
    produced: int = 0
    acknowledged: int = 0
    failed: int = 0
    started: float = 0.0
    ended: float = 0.0
    per_second: list[int] = field(default_factory=list)

    @property
    def achieved_rate(self) -> float:
        elapsed = (self.ended or time.monotonic()) - self.started
        return self.produced / elapsed if elapsed > 0 else 0.0


class LoadGenerator:
    """Produces ``count`` events or for ``duration`` seconds, whichever ends first."""

    def __init__(self, bootstrap: str, topic: str, rate: float, count: int | None = None,
                 duration: float | None = None, seed: int = 0, malformed_rate: float = 0.0) -> None:
        if count is None and duration is None:
            raise ValueError("give a count or a duration")
        self.topic, self.rate, self.count, self.duration = topic, rate, count, duration
        self.generator = TransactionGenerator(seed=seed, malformed_rate=malformed_rate)
        self.stats = GeneratorStats()
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "enable.idempotence": True,
                                   "compression.type": "lz4", "message.max.bytes": 4_000_000})

    def _ack(self, err: object, _msg: object) -> None:
        if err is None:
            self.stats.acknowledged += 1
        else:
            self.stats.failed += 1

    def run(self, stop: threading.Event | None = None) -> GeneratorStats:
        stop = stop or threading.Event()
        s = self.stats
        s.started = start = time.monotonic()
        end = start + self.duration if self.duration else float("inf")
        limit = self.count if self.count is not None else 1 << 62
        second_mark, second_count = start + 1.0, 0
        while s.produced < limit and not stop.is_set():
            now = time.monotonic()
            if now >= end:
                break
            if now >= second_mark:
                s.per_second.append(s.produced - second_count)
                second_count, second_mark = s.produced, second_mark + 1.0
            due = limit - s.produced if self.rate <= 0 else int((now - start) * self.rate) - s.produced
            if due <= 0:
                time.sleep(0.0005)
                continue
            n = min(due, 1000, limit - s.produced)
            for key, value in self.generator.encoded(n, now_ms=int(time.time() * 1000)):
                produce_one(self._producer, self.topic, value, key, on_delivery=self._ack)
            s.produced += n
            self._producer.poll(0)
        self._producer.flush(30)
        s.ended = time.monotonic()
        return s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=float, default=20_000, help="events/s; 0 = as fast as possible")
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--duration", type=float, default=None, help="seconds")
    parser.add_argument("--malformed-rate", type=float, default=0.0)
    args = parser.parse_args()
    gen = LoadGenerator(args.bootstrap_servers, args.topic, args.rate, args.count,
                        args.duration if args.duration or args.count else 60.0, malformed_rate=args.malformed_rate)
    stats = gen.run()
    print(f"produced {stats.produced:,} ({stats.acknowledged:,} acknowledged, {stats.failed:,} failed) "
          f"at {stats.achieved_rate:,.0f} events/s")


if __name__ == "__main__":
    main()
