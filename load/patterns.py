"""Throughput of each inference pattern's scoring core on the demo data (no broker).

    python -m load.patterns [--events 100000] [--batch 2000] [--repeat 3]

For the demo configuration and every ``examples/*.yaml``: ``Scorer.score`` (decode, features, the
models, decisions, records; a shadow's records too) over the same synthetic transactions with
their keys, best of ``--repeat`` passes, as events per second on one process. For the cascade it
also times its two models alone, to show its cost as the first stage on every row plus the second
stage on the gated share. The broker's share is measured by ``streamscore demo --config FILE``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from load.pipeline_throughput import BenchMessage
from load.stage_costs import best_of
from streamscore.config import Settings, load_settings
from streamscore.core.decode import decode
from streamscore.core.graph import ModelGraph
from streamscore.core.scorer import Scorer, ScoringSpec
from streamscore.demo.transactions import TransactionGenerator
from streamscore.metrics import Metrics
from streamscore.plugins import Plugins
from streamscore.service import build_challengers, build_runner

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [ROOT / "streamscore" / "demo" / "config.yaml", *sorted((ROOT / "examples").glob("*.yaml"))]


def scorer_for(settings: Settings, metrics: Metrics) -> Scorer:
    runner = build_runner(settings, Plugins.default(), metrics)
    runner.load()
    challengers = build_challengers(settings, Plugins.default())
    challengers.load()
    return Scorer(ScoringSpec.from_settings(settings), runner, challengers)


def cascade_split(scorer: Scorer, batches: Sequence[Sequence[BenchMessage]], repeat: int) -> str:
    """The cascade's first model on every row, its second on the gated rows only, and on all rows."""
    graph = scorer.runner
    assert isinstance(graph, ModelGraph)
    first, second = graph.graph.names
    matrices = [scorer.extractor.extract([e for e in decode([m.value() for m in b], 1_000_000)[0] if e is not None])
                for b in batches]
    full = [x.matrix[x.valid] for x in matrices]
    fast_in = [graph._input(first, m) for m in full]
    scores = [graph.runners[first].predict(m) for m in fast_in]
    lo, hi = graph.graph.band  # type: ignore[union-attr]
    gated = [m[(s >= lo) & (s <= hi)] for m, s in zip(full, scores, strict=True)]
    rows = sum(len(m) for m in full)
    share = sum(len(g) for g in gated) / rows
    t_first = best_of(repeat, lambda: [graph.runners[first].predict(m) for m in fast_in])
    t_gated = best_of(repeat, lambda: [graph.runners[second].predict(graph._input(second, g)) for g in gated if len(g)])
    t_all = best_of(repeat, lambda: [graph.runners[second].predict(graph._input(second, m)) for m in full])
    us = 1e6 / rows
    return (f"cascade models alone: {first} {t_first * us:.2f} us/event on every row + {second} "
            f"{t_gated * us:.2f} us/event on the gated {share:.1%} (it costs {t_all * us:.2f} us/event on all "
            f"rows) = {(t_first + t_gated) * us:.2f} us/event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    pairs = TransactionGenerator(seed=5, malformed_rate=0.002).encoded(args.events)
    messages = [BenchMessage(v, i, key=k) for i, (k, v) in enumerate(pairs)]
    batches = [messages[i:i + args.batch] for i in range(0, len(messages), args.batch)]
    print(f"{args.events:,} events in batches of {args.batch}, best of {args.repeat}; scoring core only (no broker)")
    print("| configuration | events/s | us/event | rows per model (one pass) |")
    print("| --- | ---: | ---: | --- |")
    notes = []
    for path in CONFIGS:
        settings = load_settings(path, env={})
        metrics = Metrics()
        scorer = scorer_for(settings, metrics)
        for batch in batches:  # one pass: warms up, and counts the rows each model is called with
            scorer.score(batch)
        counted = {s.labels["stage"]: s.value for m in metrics.stage_rows.collect()
                   for s in m.samples if s.name.endswith("_total")}
        seconds = best_of(args.repeat, lambda s=scorer: [s.score(b) for b in batches])  # type: ignore[misc]
        rows = ", ".join(f"{k} {v:,.0f}" for k, v in counted.items()) or "one model"
        name = path.relative_to(ROOT)
        print(f"| `{name}` | {args.events / seconds:,.0f} | {seconds / args.events * 1e6:.2f} | {rows} |", flush=True)
        if path.stem == "cascade":
            notes.append(cascade_split(scorer, batches, args.repeat))
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
