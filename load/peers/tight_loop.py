"""The tight loop: consume up to 5,000 events, one model call, produce, flush, commit; repeat.

A plain confluent-kafka consumer in a group and one producer. Offsets are committed synchronously
after ``flush`` has every output of the batch acknowledged, so the commit never passes an output.
Timed from the first consumed batch to the commit of the batch holding the last event.
"""

from __future__ import annotations

from confluent_kafka import Consumer, Producer
from peer import FETCH_WAIT_MS, Clock, arguments
from scoring import Scorer


def main() -> None:
    args = arguments(__doc__ or "")
    scorer = Scorer.from_file(args.job)
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "fetch.wait.max.ms": FETCH_WAIT_MS})
    producer = Producer({"bootstrap.servers": args.bootstrap, "enable.idempotence": True, "linger.ms": 5,
                         "compression.type": "lz4", "message.max.bytes": 2_000_000})
    consumer.subscribe([args.source])
    clock = Clock()
    try:
        while clock.consumed < args.events:
            messages = [m for m in consumer.consume(args.batch, 0.5) if m.error() is None]
            if not messages:
                continue
            clock.consume(len(messages))
            items = [(m.key(), m.value(), m.topic(), m.partition(), m.offset(), m.timestamp()[1]) for m in messages]
            for scored, key, value, headers in scorer.score(items):
                topic = args.out if scored else args.dlq
                while True:
                    try:
                        producer.produce(topic, value, key, headers=headers or None)
                        break
                    except BufferError:
                        producer.poll(0.01)
            if producer.flush(60) != 0:
                raise SystemExit("outputs not acknowledged within 60 s")
            consumer.commit(asynchronous=False)
        clock.end()
    finally:
        consumer.close()
    clock.write(args.result)


if __name__ == "__main__":
    main()
