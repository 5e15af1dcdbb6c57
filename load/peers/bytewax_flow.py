"""Bytewax 0.21: its Kafka source (batches of up to 5,000 per partition), one ``flat_map_batch``
step that scores each batch with one model call, and its Kafka sink (each output names its topic:
output or dead letters, with the reason headers).

Bytewax commits no offsets to Kafka: its source reads assigned partitions from the start and
keeps positions only in recovery snapshots (not enabled here), so a restart would score again
from the beginning. Its sink produces a batch and flushes it before taking the next one. The
source runs with ``tail=False`` (stop at the end of each partition), so the dataflow ends after
the last batch is flushed; timed from the first batch scored to ``run_main`` returning.
"""

from __future__ import annotations

from bytewax import operators as op
from bytewax.connectors.kafka import KafkaSinkMessage, KafkaSourceMessage
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow
from bytewax.testing import run_main
from peer import FETCH_WAIT_MS, Clock, arguments
from scoring import Scorer


def main() -> None:
    args = arguments(__doc__ or "")
    scorer = Scorer.from_file(args.job)
    clock = Clock()

    def score(batch: list[KafkaSourceMessage]) -> list[KafkaSinkMessage]:
        clock.consume(len(batch))
        items = [(m.key, m.value, m.topic, m.partition, m.offset, m.timestamp[1]) for m in batch]
        return [KafkaSinkMessage(key, value, topic=args.out if scored else args.dlq, headers=headers)
                for scored, key, value, headers in scorer.score(items)]

    flow = Dataflow("score")
    source = kop.input("in", flow, brokers=[args.bootstrap], topics=[args.source], tail=False,
                       batch_size=args.batch, add_config={"fetch.wait.max.ms": str(FETCH_WAIT_MS)})
    kop.output("out", op.flat_map_batch("score", source.oks, score), brokers=[args.bootstrap], topic=args.out,
               add_config={"linger.ms": "5", "compression.type": "lz4", "enable.idempotence": "true"})
    run_main(flow)
    clock.end()
    clock.write(args.result)


if __name__ == "__main__":
    main()
