"""Faust (faust-streaming): one agent on the input topic taking up to 5,000 events at a time with
``Stream.take_events`` (0.5 s window), one model call per batch, ``await topic.send`` per output
(output or dead letters, with the reason headers).

Faust acks the events of a batch when the agent asks for the next one, and commits acked offsets
every ``broker_commit_interval`` (2.8 s); by default (``stream_publish_on_commit`` off) it
does not wait for the outputs' acknowledgements before committing. After the last event a
timer flushes the producer, then commits: timed from the first batch to that commit. Faust's
consumer (its aiokafka driver) hard-codes ``fetch_max_wait_ms=1500``; it is set to the same
10 ms as every other variant here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import aiokafka
import faust
from peer import FETCH_WAIT_MS, Clock, arguments
from scoring import Scorer


class _Consumer(aiokafka.AIOKafkaConsumer):  # type: ignore[misc]
    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs["fetch_max_wait_ms"] = FETCH_WAIT_MS
        super().__init__(*args, **kwargs)


aiokafka.AIOKafkaConsumer = _Consumer


def main() -> None:
    args = arguments(__doc__ or "")
    scorer = Scorer.from_file(args.job)
    clock = Clock()
    app = faust.App(args.group, broker=f"kafka://{args.bootstrap}", web_enabled=False, topic_disable_leader=True,
                    topic_allow_declare=False, consumer_auto_offset_reset="earliest", store="memory://",
                    key_serializer="raw", value_serializer="raw", datadir=str(Path(args.result).parent / "faust-data"))
    source = app.topic(args.source, key_type=bytes, value_type=bytes)
    out = app.topic(args.out, key_type=bytes, value_type=bytes)
    dlq = app.topic(args.dlq, key_type=bytes, value_type=bytes)

    @app.agent(source)
    async def score(stream):  # a faust.Stream (faust's StreamT protocol lacks take_events)
        async for events in stream.take_events(args.batch, within=0.5):
            clock.started = clock.started or time.monotonic()
            items = [(e.key, e.value, e.message.topic, e.message.partition, e.message.offset,
                      int(e.message.timestamp * 1000)) for e in events]
            for scored, key, value, headers in scorer.score(items):
                await (out if scored else dlq).send(key=key, value=value, headers=headers or None)
            clock.consumed += len(events)  # counted once sent: the timer below must not commit mid-batch

    ticks = []

    @app.timer(0.05)
    async def finish() -> None:
        if clock.consumed >= args.events and not clock.ended:
            ticks.append(1)
            if len(ticks) < 2:
                return  # one more tick: take_events acks the last batch when the agent asks for the next
            await app.producer.flush()
            await app.consumer.commit()
            clock.end()
            clock.write(args.result)
            os._exit(0)  # Faust's own shutdown takes seconds and is not what is measured

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
