"""``streamscore demo``: synthetic card transactions through the real service, with a live progress line.

The service part is the same ``Service`` that ``streamscore run`` starts; the demo only adds a
producer thread, a progress line and a downstream count of what landed in the output topics.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from streamscore.broker import EmbeddedBroker
from streamscore.config import FaustSettings, FeatureSettings, Settings, load_settings
from streamscore.demo.transactions import TransactionGenerator
from streamscore.engines.kafka_admin import create_topics
from streamscore.metrics import Totals
from streamscore.service import Service

log = logging.getLogger(__name__)

SOURCE_PARTITIONS = 4


@dataclass(frozen=True)
class DemoOptions:
    bootstrap_servers: str | None = None
    events: int = 100_000
    rate: float = 20_000
    malformed_rate: float = 0.002
    provider: str | None = None
    seed: int = 7
    config: Path | None = None
    """A configuration to run instead of the packaged one (``examples/``): its topics are renamed
    per run like the demo's, and its features must read the synthetic transactions."""
    engine: str = "confluent-kafka"
    """``faust``: the Faust engine, with the activity counts computed by its tables (the events carry none)."""


VELOCITY: list[dict[str, Any]] = [
    {"name": "tx_count_1h", "aggregate": "count", "key": "card.id", "window": "1h"},
    {"name": "tx_count_24h", "aggregate": "count", "key": "card.id", "window": "24h"},
]
"""Under ``--engine faust`` the demo model's two activity columns are computed from the stream itself."""


def run_demo(options: DemoOptions) -> int:
    with contextlib.ExitStack() as stack:
        bootstrap = options.bootstrap_servers
        if bootstrap is None:
            print("starting the embedded broker (Tansu, in-memory) ...", flush=True)
            bootstrap = stack.enter_context(EmbeddedBroker()).bootstrap_servers
        settings = stack.enter_context(_demo_settings(bootstrap, options))
        return _run(settings, options)
    return 1  # unreachable; keeps type checkers content


@contextlib.contextmanager
def _demo_settings(bootstrap: str, options: DemoOptions) -> Iterator[Settings]:
    """The packaged demo config, on fresh topics and group (so reruns on one cluster count right)."""
    run_id = uuid.uuid4().hex[:8]
    with as_file(files("streamscore.demo") / "config.yaml") as path:
        base = load_settings(options.config or Path(path), env={})
    kafka = base.kafka.model_copy(update={
        "bootstrap_servers": bootstrap,
        "group_id": f"{base.kafka.group_id}-{run_id}",
        "source_topics": [f"{base.kafka.source_topics[0]}-{run_id}"],
        "destination_topic": f"{base.kafka.destination_topic}-{run_id}",
        "dead_letter_topic": f"{base.kafka.dead_letter_topic}-{run_id}",
        "session_timeout_ms": 6000,
    })
    update: dict[str, Any] = {"kafka": kafka}
    if base.shadow is not None:
        update["shadow"] = base.shadow.model_copy(update={"topic": f"{base.shadow.topic}-{run_id}"})
    if options.engine == "faust":
        stateful = {f["name"]: f for f in VELOCITY}
        features = [FeatureSettings(**stateful[f.name]) if f.name in stateful else f for f in base.features]
        data_dir = Path(tempfile.gettempdir()) / f"streamscore-demo-{run_id}"
        # memory: fresh topics each run, and the embedded broker cannot restart a RocksDB table (README)
        update.update(engine="faust", features=features, faust=FaustSettings(data_dir=str(data_dir), store="memory"))
    if options.provider is not None:
        provider = {"provider": options.provider}
        if base.model is not None:
            update["model"] = base.model.model_copy(update=provider)
        update["models"] = {name: m.model_copy(update=provider) for name, m in base.models.items()}
    yield base.model_copy(update=update)


def _run(settings: Settings, options: DemoOptions) -> int:
    k = settings.kafka
    shadow = {settings.shadow.topic: SOURCE_PARTITIONS} if settings.shadow is not None else {}
    create_topics(k.bootstrap_servers, {k.source_topics[0]: SOURCE_PARTITIONS, k.destination_topic: SOURCE_PARTITIONS,
                                        k.dead_letter_topic: 1, **shadow})
    service = Service(settings)
    service.prepare()
    print(f"model {service.runner.name} {service.runner.version} on {service.runner.provider}; "
          f"producing {options.events:,} transactions to {k.source_topics[0]} "
          f"({'as fast as possible' if options.rate <= 0 else f'{options.rate:,.0f}/s'}) ...", flush=True)
    producer = _ProducerThread(k.bootstrap_servers, k.source_topics[0], options, service)
    stop = threading.Event()
    monitor = threading.Thread(target=_monitor, args=(service, producer, stop), daemon=True)
    producer.start()
    monitor.start()
    code = service.run(stop)
    stop.set()  # the service may have stopped by itself (a failure): the progress line stops too
    elapsed = time.monotonic() - producer.started_at
    monitor.join()
    producer.join()
    if producer.error:
        print(f"\nproducer failed: {producer.error}", file=sys.stderr)
        return 1
    totals = service.totals
    landed = _count_outputs(k.bootstrap_servers, k.destination_topic, k.dead_letter_topic,
                            totals.scored, totals.dead_lettered)
    _summary(service, producer.produced, totals, landed, elapsed, options.rate)
    balanced = totals.consumed == totals.scored + totals.dead_lettered == producer.produced
    downstream = landed == (totals.scored, totals.dead_lettered)
    return code if balanced and downstream else 1


class _ProducerThread(threading.Thread):
    """Produces the synthetic stream at a steady rate, in chunks, with the event time stamped."""

    def __init__(self, bootstrap: str, topic: str, options: DemoOptions, service: Service) -> None:
        super().__init__(name="demo-producer", daemon=True)
        self.service = service
        self.topic = topic
        self.options = options
        self.produced = 0
        self.started_at = time.monotonic()
        self.error: str | None = None
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True,
                                   "compression.type": "lz4", "message.max.bytes": 4_000_000})

    def run(self) -> None:
        stateful = self.options.engine == "faust"  # no precomputed counts; keyed by card, the state's key
        generator = TransactionGenerator(seed=self.options.seed, malformed_rate=self.options.malformed_rate,
                                         activity=not stateful)
        total, rate = self.options.events, self.options.rate
        chunk = 1000 if rate <= 0 else max(1, min(1000, int(rate / 100)))
        self._wait_for_assignment()
        started = self.started_at = time.monotonic()
        try:
            while self.produced < total:
                n = min(chunk, total - self.produced)
                for key, value in generator.encoded(n, now_ms=int(time.time() * 1000),
                                                    key="card" if stateful else "transaction"):
                    while True:
                        try:
                            self._producer.produce(self.topic, value, key)
                            break
                        except BufferError:
                            self._producer.poll(0.05)
                self.produced += n
                self._producer.poll(0)
                if rate > 0:
                    ahead = self.produced / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
            if self._producer.flush(30) != 0:
                self.error = "not every event was acknowledged by the broker"
        except Exception as exc:  # noqa: BLE001 - reported by the demo, which then exits non-zero
            self.error = str(exc)


    def _wait_for_assignment(self, timeout: float = 60.0) -> None:
        """Start once the service has joined its group, so latency measures scoring, not the join."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.service.assigned:
                return
            time.sleep(0.05)


def _monitor(service: Service, producer: _ProducerThread, stop: threading.Event) -> None:
    """Prints the progress line; stops the service once everything produced has been consumed."""
    tty = sys.stdout.isatty()
    last_print = 0.0
    last_consumed, last_time = 0, time.monotonic()
    rate = 0.0
    while not stop.wait(0.25):
        t = service.totals
        now = time.monotonic()
        if now - last_time >= 1.0:
            rate = (t.consumed - last_consumed) / (now - last_time)
            last_consumed, last_time = t.consumed, now
        finished = (not producer.is_alive()) and t.consumed >= producer.produced
        if tty or now - last_print >= 2.0 or finished:
            last_print = now
            line = _progress(service, t, rate)
            print(f"\r{line}   " if tty else line, end="" if tty else "\n", flush=True)
        if finished or producer.error:
            stop.set()
    if tty:
        print(flush=True)


def _progress(service: Service, t: Totals, rate: float) -> str:
    latency = service.metrics.end_to_end
    split = " ".join(f"{label} {count:,}" for label, count in t.decisions.items())
    return (f"consumed {t.consumed:,} | {rate:,.0f} ev/s | {split} | dead-lettered {t.dead_lettered:,} | "
            f"latency p50 <= {_ms(latency.quantile(0.5))} p99 <= {_ms(latency.quantile(0.99))}")


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.0f} ms"


def _count_outputs(bootstrap: str, destination: str, dead_letter: str, scored: int, dead: int,
                   timeout: float = 30.0) -> tuple[int, int]:
    """Reads the output topics back and counts their records (not their offsets: see the README)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"demo-count-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000})
    consumer.subscribe([destination, dead_letter])
    counts = {destination: 0, dead_letter: 0}
    deadline = time.monotonic() + timeout
    try:
        while (counts[destination], counts[dead_letter]) != (scored, dead) and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.5):
                if msg.error() is None:
                    counts[str(msg.topic())] += 1
    finally:
        consumer.close()
    return counts[destination], counts[dead_letter]


def _summary(service: Service, produced: int, t: Totals, landed: tuple[int, int], elapsed: float,
             rate: float) -> None:
    latency = service.metrics.end_to_end
    reasons = _dead_letter_reasons(service)
    ok = t.consumed == t.scored + t.dead_lettered
    print()
    print("summary")
    print(f"  produced       {produced:>10,}")
    print(f"  consumed       {t.consumed:>10,}  = scored + dead-lettered: {'yes' if ok else 'NO'}")
    print(f"  scored         {t.scored:>10,}  " + ", ".join(f"{k} {v:,}" for k, v in t.decisions.items()))
    print(f"  dead-lettered  {t.dead_lettered:>10,}  " + ", ".join(f"{k} {v:,}" for k, v in reasons.items()))
    print(f"  downstream     {landed[0]:>10,} score records, {landed[1]:,} dead-letter records read back")
    offered = "as fast as possible" if rate <= 0 else f"offered {rate:,.0f}/s"
    rate = t.consumed / elapsed if elapsed else 0
    print(f"  throughput     {rate:>10,.0f} events/s over {elapsed:.1f} s ({offered})")
    print(f"  latency        p50 <= {_ms(latency.quantile(0.5))}, p99 <= {_ms(latency.quantile(0.99))} "
          "(event time to output acknowledged)")
    for line in _pattern_lines(service):
        print(f"  {line}")


def _pattern_lines(service: Service) -> list[str]:
    """Rows per model of a graph, the shadow's agreement, the canary's share: what the patterns did."""
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for metric in service.metrics.registry.collect() for s in metric.samples}
    stages = {dict(labels)["stage"]: int(v) for (name, labels), v in values.items()
              if name == "streamscore_graph_stage_rows_total" and v}
    lines = []
    if stages:
        lines.append("model rows     " + ", ".join(f"{k} {v:,}" for k, v in stages.items()))
    compared = values.get(("streamscore_shadow_compared_total", ()), 0)
    if compared:
        agreement = values[("streamscore_shadow_decision_agreement_ratio", ())]
        difference = values[("streamscore_shadow_score_mean_abs_difference", ())]
        lines.append(f"shadow         {int(compared):,} compared, decisions agree {agreement:.1%}, "
                     f"mean |score difference| {difference:.4f}")
    canary = values.get(("streamscore_canary_events_total", ()), 0)
    if canary:
        lines.append(f"canary         {int(canary):,} events scored and decided by the canary")
    return lines


def _dead_letter_reasons(service: Service) -> dict[str, int]:
    reasons: dict[str, int] = {}
    for metric in service.metrics.dead_lettered.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.value:
                reasons[sample.labels["reason"]] = int(sample.value)
    return reasons
