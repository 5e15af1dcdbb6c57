"""Whole-pipeline throughput on the demo model: a backlog of N events drained by one process.

    python -m load.pipeline_throughput --events 300000

Pre-produces N synthetic transactions (with ~0.2% malformed ones) to a fresh 4-partition topic,
then runs the real service (``Service``: consume, decode, features, model, decisions, produce,
commit, metrics) until every event is consumed and acknowledged, and reports events/s from the
first consumed event to the last commit. Also times the scoring core alone (no Kafka) on the
same events, to show where the time goes. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import threading
import time
import uuid
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

from load.benchmark import produce_all
from streamscore.broker import EmbeddedBroker
from streamscore.config import Settings, load_settings
from streamscore.core.scorer import Scorer, ScoringSpec
from streamscore.demo.transactions import TransactionGenerator
from streamscore.engines.kafka_admin import create_topics
from streamscore.runners.onnx import OnnxRunner
from streamscore.service import Service

PARTITIONS = 4


class BenchMessage:
    """A stand-in message for timing the scoring core without a broker."""

    __slots__ = ("_key", "_offset", "_value")

    def __init__(self, value: bytes, offset: int, key: bytes | None = None) -> None:
        self._value, self._offset, self._key = value, offset, key

    def topic(self) -> str: return "bench"
    def partition(self) -> int: return 0
    def offset(self) -> int: return self._offset
    def key(self) -> bytes | None: return self._key
    def value(self) -> bytes: return self._value
    def headers(self) -> None: return None
    def timestamp(self) -> tuple[int, int]: return (1, 1_700_000_000_000)


def settings_for(bootstrap: str, batch: int, provider: str, delivery: str = "at_least_once") -> Settings:
    run = uuid.uuid4().hex[:8]
    with as_file(files("streamscore.demo") / "config.yaml") as path:
        base = load_settings(Path(path), env={})
    kafka = base.kafka.model_copy(update={
        "bootstrap_servers": bootstrap, "group_id": f"bench-{run}", "source_topics": [f"bench-in-{run}"],
        "destination_topic": f"bench-out-{run}", "dead_letter_topic": f"bench-dlq-{run}", "session_timeout_ms": 6000,
    })
    batching = base.batching.model_copy(update={"max_batch_size": batch})
    model = base.single_model.model_copy(update={"provider": provider})
    return base.model_copy(update={"kafka": kafka, "batching": batching, "model": model, "delivery": delivery})


def core_only(settings: Settings, values: list[bytes]) -> float:
    """Events/s of Scorer.score alone (decode, features, model, decisions, output records)."""
    runner = OnnxRunner(settings.single_model, settings.feature_width)
    runner.load()
    scorer = Scorer(ScoringSpec.from_settings(settings), runner)
    size = settings.batching.max_batch_size
    messages = [BenchMessage(v, i) for i, v in enumerate(values)]
    started = time.perf_counter()
    for start in range(0, len(messages), size):
        scorer.score(messages[start:start + size])
    return len(messages) / (time.perf_counter() - started)


def pipeline(settings: Settings, events: int) -> dict[str, Any]:
    service = Service(settings)
    service.start()
    stop = threading.Event()
    first: list[float] = []

    def watch() -> None:
        while not stop.is_set():
            p = service.pipeline
            if p is not None:
                if p.totals.consumed and not first:
                    first.append(time.monotonic())
                if p.totals.consumed >= events:
                    stop.set()
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    code = service.run(stop)
    ended = time.monotonic()
    totals = service.pipeline.totals  # type: ignore[union-attr]
    elapsed = ended - first[0]
    return {"exit_code": code, "consumed": totals.consumed, "scored": totals.scored,
            "dead_lettered": totals.dead_lettered, "seconds": round(elapsed, 3),
            "events_per_second": round(totals.consumed / elapsed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--provider", default="cpu")
    parser.add_argument("--bootstrap-servers", default=None)
    parser.add_argument("--delivery", default="at_least_once", choices=["at_least_once", "exactly_once"])
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    logging.basicConfig(level="WARNING")

    with contextlib.ExitStack() as stack:
        bootstrap = args.bootstrap_servers or stack.enter_context(EmbeddedBroker()).bootstrap_servers
        settings = settings_for(bootstrap, args.batch, args.provider, args.delivery)
        k = settings.kafka
        create_topics(bootstrap, {k.source_topics[0]: PARTITIONS, k.destination_topic: PARTITIONS,
                                  k.dead_letter_topic: 1})
        encoded = TransactionGenerator(seed=42, malformed_rate=0.002).encoded(args.events)
        core = core_only(settings, [v for _, v in encoded])
        produce_all(bootstrap, k.source_topics[0], encoded)
        result = {
            "events": args.events, "batch": args.batch, "provider": args.provider, "delivery": args.delivery,
            "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                        "python": platform.python_version()},
            "scoring_core_events_per_second": round(core),
            "pipeline": pipeline(settings, args.events),
        }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
