"""Side-by-side benchmark: pass-through ceiling, naive per-message loop, and streamscore.

    python -m load.benchmark --events 300000 [--bootstrap-servers host:9092] [--output bench.json]

One run, one broker, one input topic of N synthetic transactions (4 partitions):
1. ceiling: a minimal confluent-kafka loop that consumes raw bytes in batches, produces them
   unchanged, and commits after delivery; nothing that does more work can be faster here;
2. naive: poll one event, decode, score a batch of one, produce, flush, commit; it is so slow
   that it runs for ``--naive-seconds`` over a prefix of the same events, and its rate is that
   prefix's;
3. streamscore: ``streamscore run`` as its own process with the demo configuration.
Every variant's outputs are read back and counted, so none can win by dropping work.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from load.kafka_io import produce_one
from streamscore.broker import EmbeddedBroker, free_port
from streamscore.config import load_settings
from streamscore.core.decisions import DecisionPolicy
from streamscore.core.features import FeatureExtractor
from streamscore.demo.transactions import TransactionGenerator
from streamscore.engines.kafka_admin import create_topics
from streamscore.runners.onnx import OnnxRunner

PARTITIONS = 4
log = logging.getLogger("benchmark")


def consumer(bootstrap: str, group: str, topic: str, **extra: Any) -> Consumer:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "session.timeout.ms": 6000, "fetch.wait.max.ms": 10, **extra})
    c.subscribe([topic])
    return c


def producer(bootstrap: str, **extra: Any) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                     "message.max.bytes": 4_000_000, **extra})


def produce_all(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> dict[int, int]:
    """Produce every item; returns each partition's end (last acknowledged offset + 1)."""
    p = producer(bootstrap, **{"linger.ms": 20})
    ends: dict[int, int] = {}

    def delivered(err: Any, msg: Any) -> None:
        if err is None and msg.offset() >= ends.get(msg.partition(), 0):
            ends[msg.partition()] = msg.offset() + 1

    for key, value in items:
        produce_one(p, topic, value, key, on_delivery=delivered)
    if p.flush(120) != 0:
        raise SystemExit("inputs not acknowledged")
    return ends


def count_records(bootstrap: str, topics: list[str], expected: int, timeout: float = 120.0) -> int:
    """Records in ``topics``, read from the start (never end offsets: the embedded broker's are off)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, "session.timeout.ms": 6000})
    c.subscribe(topics)
    seen, deadline, quiet = 0, time.monotonic() + timeout, 0
    try:
        while time.monotonic() < deadline and (seen < expected or quiet < 5):
            batch = [m for m in c.consume(10_000, 0.3) if m.error() is None]
            seen += len(batch)
            quiet = quiet + 1 if not batch and seen >= expected else 0
    finally:
        c.close()
    return seen


def ceiling(bootstrap: str, source: str, out: str, total: int) -> float:
    """Raw bytes in, the same bytes out, commit after delivery: the broker-and-client limit."""
    c = consumer(bootstrap, f"ceiling-{uuid.uuid4().hex[:6]}", source)
    p = producer(bootstrap, **{"linger.ms": 5, "compression.type": "lz4"})
    done, started = 0, 0.0
    positions: dict[tuple[str, int], int] = {}
    while done < total:
        msgs = c.consume(2000, 0.5)
        if msgs and not started:
            started = time.perf_counter()
        for m in msgs:
            if m.error() is None:
                p.produce(out, m.value(), m.key())
                topic, partition, offset = m.topic(), m.partition(), m.offset()
                assert topic is not None and partition is not None and offset is not None  # set on a record
                positions[(topic, partition)] = offset + 1
        done += len(msgs)
        p.poll(0)
        if len(p) > 20_000 or done >= total:
            p.flush(60)
            c.commit(offsets=[TopicPartition(t, q, o) for (t, q), o in positions.items()], asynchronous=False)
    elapsed = time.perf_counter() - started
    c.close()
    return total / elapsed


def naive(bootstrap: str, source: str, out: str, config: Path, seconds: float) -> tuple[float, int]:
    """One event at a time through decode, features, model, decision, produce+flush, commit."""
    settings = load_settings(config, env={})
    runner = OnnxRunner(settings.single_model, settings.feature_width)
    runner.load()
    features, policy = FeatureExtractor(settings.features), DecisionPolicy(settings.decisions)
    c = consumer(bootstrap, f"naive-{uuid.uuid4().hex[:6]}", source)
    p = producer(bootstrap)
    done, started = 0, 0.0
    while not started or time.perf_counter() - started < seconds:
        m = c.poll(0.5)
        if m is None or m.error() is not None:
            continue
        started = started or time.perf_counter()
        try:
            event = orjson.loads(m.value() or b"")
            extraction = features.extract([event])
            score = float(runner.predict(extraction.matrix)[0]) if extraction.reasons[0] is None else None
        except Exception:  # noqa: BLE001 - the naive loop, like a naive user, scores what it can
            score = None
        decision = policy.decide(np.asarray([score]))[0] if score is not None else None
        value = orjson.dumps({"score": score, "decision": decision})
        p.produce(out, value, m.key())
        p.flush(10)
        c.commit(message=m, asynchronous=False)
        done += 1
    elapsed = time.perf_counter() - started
    c.close()
    return done / elapsed, done


def streamscore(bootstrap: str, source: str, out: str, dlq: str, total: int, workdir: Path, workers: int = 1,
                checkout: Path | None = None, group: str | None = None, overrides: dict[str, Any] | None = None,
                scraped_at_end: dict[str, float] | None = None) -> float:
    """``streamscore run [--workers N]`` as a subprocess (the package from ``checkout`` when given, so
    another commit runs on the same events); timed from the first consumed event to the last commit,
    summed over the workers' metrics (ports base .. base + N - 1). ``overrides`` replace top-level
    config sections (``engine: faust``, say); ``scraped_at_end`` receives the last scrape (one worker)."""
    port = free_port()
    while any(_in_use(port + i) for i in range(1, workers)):
        port = free_port()
    with as_file(files("streamscore.demo") / "config.yaml") as demo:
        config = yaml.safe_load(Path(demo).read_text())
        config["model"]["path"] = str(Path(demo).parent / "fraud_model.onnx")
    config["kafka"].update(bootstrap_servers=bootstrap, group_id=group or f"streamscore-{uuid.uuid4().hex[:6]}",
                           source_topics=[source], destination_topic=out, dead_letter_topic=dlq,
                           session_timeout_ms=6000)
    config["model"]["provider"] = "cpu"
    config["metrics"] = {"host": "127.0.0.1", "port": port}
    config.update(overrides or {})
    path = workdir / "streamscore.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(checkout)} if checkout else None
    proc = subprocess.Popen([sys.executable, "-m", "streamscore", "run", "-c", str(path), "--workers", str(workers)],
                            stdout=subprocess.DEVNULL, stderr=(workdir / "streamscore.log").open("wb"), env=env)
    try:
        started = ended = 0.0
        while not ended:
            scraped = [_scrape(port + i) for i in range(workers)]
            consumed = sum(v.get("streamscore_events_consumed_total", 0.0) for v in scraped)
            uncommitted = sum(v.get("streamscore_uncommitted_events", 1.0) for v in scraped)
            if consumed and not started:
                started = time.perf_counter()
            if consumed >= total and uncommitted == 0:
                ended = time.perf_counter()
                if scraped_at_end is not None:
                    scraped_at_end.update(scraped[0])
            if proc.poll() is not None:
                raise SystemExit(f"streamscore exited early; see {workdir / 'streamscore.log'}")
            # A scrape costs the service a few milliseconds of CPU (a profile of a 200,000-event drain
            # scraped every 0.1 s spent 6% of its samples answering them), which no peer pays: scrape
            # every 0.1 s only while waiting for the first events and in the last ~2 s, at the rate so far.
            rate = consumed / max(time.perf_counter() - started, 1e-3) if started else 0.0
            time.sleep(1.0 if rate and total - consumed > 2 * rate else 0.1)
    finally:
        proc.terminate()
        proc.wait(60)
    return total / (ended - started)


def _in_use(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _scrape(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    pairs = (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {name: float(value) for name, value in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--naive-seconds", type=float, default=20.0)
    parser.add_argument("--bootstrap-servers", default=None)
    parser.add_argument("--output", type=Path, default=Path("load/results/benchmark.json"))
    parser.add_argument("--workers", type=int, nargs="*", default=[],
                        help="also run streamscore with these worker counts (e.g. 1 2) on the same events")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a checkout of another commit (git worktree add DIR COMMIT): its streamscore runs "
                             "alternately with this one on the same events, --rounds times each")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds with --baseline")
    args = parser.parse_args()
    logging.basicConfig(level="WARNING")
    with contextlib.ExitStack() as stack:
        bootstrap = args.bootstrap_servers or stack.enter_context(EmbeddedBroker()).bootstrap_servers
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        run = uuid.uuid4().hex[:6]
        source = f"bench-in-{run}"
        outs = {name: f"bench-{name}-{run}" for name in ("ceiling", "naive", "streamscore", "dlq")}
        for n in args.workers:
            outs |= {f"workers{n}": f"bench-workers{n}-{run}", f"dlq{n}": f"bench-dlq{n}-{run}"}
        rounds = [(f"{who}{r}", checkout) for r in range(args.rounds if args.baseline else 0)
                  for who, checkout in (("baseline", args.baseline), ("current", None))]
        for name, _ in rounds:
            outs |= {name: f"bench-{name}-{run}", f"dlq-{name}": f"bench-dlq-{name}-{run}"}
        create_topics(bootstrap, {source: PARTITIONS, **dict.fromkeys(outs.values(), PARTITIONS)})
        print(f"producing {args.events:,} events to {source} ...", flush=True)
        produce_all(bootstrap, source, TransactionGenerator(seed=42, malformed_rate=0.002).encoded(args.events))

        results: dict[str, Any] = {}
        print("ceiling ...", flush=True)
        results["ceiling"] = _checked(lambda: ceiling(bootstrap, source, outs["ceiling"], args.events),
                                      bootstrap, [outs["ceiling"]], args.events)
        print("streamscore ...", flush=True)
        results["streamscore"] = _checked(
            lambda: streamscore(bootstrap, source, outs["streamscore"], outs["dlq"], args.events, workdir),
            bootstrap, [outs["streamscore"], outs["dlq"]], args.events)
        for n in args.workers:
            print(f"streamscore --workers {n} ...", flush=True)
            results[f"streamscore_workers_{n}"] = _checked(
                functools.partial(streamscore, bootstrap, source, outs[f"workers{n}"], outs[f"dlq{n}"], args.events,
                                  workdir, n),
                bootstrap, [outs[f"workers{n}"], outs[f"dlq{n}"]], args.events)
        for name, checkout in rounds:
            print(f"streamscore, {name} ...", flush=True)
            results[name] = _checked(
                functools.partial(streamscore, bootstrap, source, outs[name], outs[f"dlq-{name}"], args.events,
                                  workdir, checkout=checkout),
                bootstrap, [outs[name], outs[f"dlq-{name}"]], args.events)
        print(f"naive (for {args.naive_seconds:g} s) ...", flush=True)
        with as_file(files("streamscore.demo") / "config.yaml") as demo:
            rate, done = naive(bootstrap, source, outs["naive"], Path(demo), args.naive_seconds)
        results["naive"] = {"events_per_second": round(rate), "events": done,
                            "outputs_counted": count_records(bootstrap, [outs["naive"]], done)}

    s, c, n = (results[k]["events_per_second"] for k in ("streamscore", "ceiling", "naive"))
    report = {
        "events": args.events, "partitions": PARTITIONS,
        "broker": args.bootstrap_servers or "embedded (Tansu)",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        **results,
        "ratios": {"streamscore_over_ceiling": round(s / c, 3), "streamscore_over_naive": round(s / n, 1)},
    }
    print(f"\n{'variant':<24} {'events/s':>12}  {'events':>9}  outputs counted")
    for name in ("ceiling", "naive", "streamscore", *(f"streamscore_workers_{n}" for n in args.workers),
                 *(name for name, _ in rounds)):
        r = results[name]
        print(f"{name:<24} {r['events_per_second']:>12,}  {r['events']:>9,}  {r['outputs_counted']:,}")
    print(f"\nstreamscore / ceiling = {s / c:.2f}    streamscore / naive = {s / n:.0f}x")
    if rounds:
        medians = {who: statistics.median(results[name]["events_per_second"] for name, _ in rounds
                                          if name.startswith(who)) for who in ("baseline", "current")}
        report["baseline"] = {"checkout": str(args.baseline), "median_events_per_second": medians}
        print(f"median of {args.rounds} alternating rounds: baseline {medians['baseline']:,.0f}/s, "
              f"current {medians['current']:,.0f}/s "
              f"(current / baseline = {medians['current'] / medians['baseline']:.2f})")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"figures written to {args.output}")


def _checked(measure: Callable[[], float], bootstrap: str, topics: list[str], total: int) -> dict[str, Any]:
    rate = measure()
    counted = count_records(bootstrap, topics, total)
    if counted < total:
        raise SystemExit(f"{topics}: only {counted:,} of {total:,} outputs found; the figure would be a lie")
    return {"events_per_second": round(rate), "events": total, "outputs_counted": counted}


if __name__ == "__main__":
    main()
