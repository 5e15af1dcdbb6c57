"""The same job on both engines: ``engine: confluent-kafka`` beside ``engine: faust``.

    python -m load.engines --events 20000 [--bootstrap-servers host:9092] [--output engines.json]

One broker (the embedded one unless given), one input topic of N synthetic demo transactions
(4 partitions, keyed by transaction id, with their precomputed activity counts, so both engines run
the stateless demo job: same features, model, batch size and decisions). Each engine runs as
``streamscore run`` in its own process and group, writing to its own output topics; each is timed
from its first consumed event to its last commit (as ``load.benchmark`` times streamscore), and
its outputs are read back and counted. Besides events/s, the scrape at the end gives the time spent
in the model and the mean batch size, which locate the difference (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

from load.benchmark import PARTITIONS, count_records, produce_all, streamscore
from streamscore.broker import EmbeddedBroker
from streamscore.demo.transactions import TransactionGenerator
from streamscore.engines.kafka_admin import create_topics

ENGINES = ("confluent-kafka", "faust")


def run_engine(engine: str, bootstrap: str, source: str, total: int, workdir: Path) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    out, dlq = f"engines-out-{engine}-{run}", f"engines-dlq-{engine}-{run}"
    create_topics(bootstrap, {out: PARTITIONS, dlq: 1})
    overrides: dict[str, Any] = {"engine": engine}
    if engine == "faust":  # aiokafka: only fetch.wait.max.ms carries over from the demo's consumer settings
        overrides["faust"] = {"data_dir": str(workdir / "faust"), "store": "memory"}
    scraped: dict[str, float] = {}
    engine_dir = workdir / engine
    engine_dir.mkdir()
    rate = streamscore(bootstrap, source, out, dlq, total, engine_dir, overrides=overrides, scraped_at_end=scraped)
    outputs = count_records(bootstrap, [out, dlq], total)
    batches = scraped.get("streamscore_batch_size_count", 0.0)
    return {
        "engine": engine, "events_per_s": round(rate), "seconds": round(total / rate, 2), "outputs": outputs,
        "model_seconds": round(scraped.get("streamscore_model_inference_seconds_sum", 0.0), 3),
        "batches": int(batches), "mean_batch": round(total / batches, 1) if batches else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--bootstrap-servers", default=None)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        bootstrap = args.bootstrap_servers or stack.enter_context(EmbeddedBroker()).bootstrap_servers
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="engines-")))
        source = f"engines-in-{uuid.uuid4().hex[:6]}"
        create_topics(bootstrap, {source: PARTITIONS})
        produce_all(bootstrap, source, TransactionGenerator(seed=7, malformed_rate=0.002).encoded(args.events))
        results = [run_engine(engine, bootstrap, source, args.events, workdir) for engine in ENGINES]
    print("| engine | events/s | seconds | outputs read back | model seconds | batches | mean batch |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['engine']} | {r['events_per_s']:,} | {r['seconds']} | {r['outputs']:,} | {r['model_seconds']} | "
              f"{r['batches']:,} | {r['mean_batch']} |")
    if args.output:
        args.output.write_text(json.dumps({"events": args.events, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
