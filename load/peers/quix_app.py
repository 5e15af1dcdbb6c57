"""Quix Streams: a StreamingDataFrame scoring one message at a time (its processing model).

Each message goes through ``Scorer.score_one`` (decode, the feature row in plain Python, one model
call on a one-row matrix, record: what a per-message application does), then one of two branches
sends it to the output topic or the dead-letter topic (dead letters without the reason headers:
``to_topic`` keeps the input's headers). Quix commits through its checkpoint: flush the producer,
check every delivery, commit offset + 1 (every ``commit_interval``, default 5 s, and once more on
stop). The application stops itself when the last event is processed; timed from the first
message processed to ``Application.run`` returning after that final checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from peer import FETCH_WAIT_MS, Clock, arguments
from quixstreams import Application, message_context
from scoring import Scorer


def main() -> None:
    args = arguments(__doc__ or "")
    scorer = Scorer.from_file(args.job)
    app = Application(broker_address=args.bootstrap, consumer_group=args.group, auto_offset_reset="earliest",
                      consumer_extra_config={"fetch.wait.max.ms": FETCH_WAIT_MS}, loglevel="WARNING",
                      auto_create_topics=False, state_dir=str(Path(args.result).parent / "quix-state"))
    source = app.topic(args.source, key_deserializer="bytes", value_deserializer="bytes")
    out = app.topic(args.out, key_serializer="bytes", value_serializer="bytes")
    dlq = app.topic(args.dlq, key_serializer="bytes", value_serializer="bytes")
    clock = Clock()

    def score(value: bytes, key: bytes, timestamp: int, headers: object) -> tuple[bool, bytes]:
        clock.consume(1)
        ctx = message_context()
        scored, _, output, _ = scorer.score_one((key, value, ctx.topic, ctx.partition, ctx.offset, timestamp))
        if clock.consumed >= args.events:
            app.stop()
        return scored, output

    sdf = app.dataframe(source).apply(score, metadata=True)
    sdf.filter(lambda r: r[0]).apply(lambda r: r[1]).to_topic(out)
    sdf.filter(lambda r: not r[0]).apply(lambda r: r[1]).to_topic(dlq)
    app.run()
    clock.end()
    clock.write(args.result)


if __name__ == "__main__":
    main()
