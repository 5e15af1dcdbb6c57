"""Per-event cost of each scoring stage, in microseconds, on the demo model (no broker).

    python -m load.stage_costs [--events 200000] [--batch 2000]

Times each stage of ``Scorer.score`` on its own over the same synthetic events (0.2% malformed),
best of ``--repeat`` passes, and the whole ``score`` call for comparison. Kafka's own costs
(consume, produce, delivery callbacks) are measured by ``load.benchmark``'s ceiling instead.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from load.pipeline_throughput import BenchMessage, settings_for
from streamscore.core.decode import decode
from streamscore.core.features import gather
from streamscore.core.render import score_records
from streamscore.core.scorer import Scorer, ScoringSpec
from streamscore.demo.transactions import TransactionGenerator
from streamscore.runners.onnx import OnnxRunner
from streamscore.service import build_drift_monitor


def best_of(repeat: int, run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--intra-op-threads", type=int, default=None,
                        help="model.intra_op_threads (default: the setting's default)")
    args = parser.parse_args()

    settings = settings_for("unused:9092", args.batch, "cpu")
    model = settings.single_model
    if args.intra_op_threads is not None:
        model = model.model_copy(update={"intra_op_threads": args.intra_op_threads})
    runner = OnnxRunner(model, settings.feature_width)
    runner.load()
    scorer = Scorer(ScoringSpec.from_settings(settings), runner)
    values = [v for _, v in TransactionGenerator(seed=5, malformed_rate=0.002).encoded(args.events)]
    messages = [BenchMessage(v, i) for i, v in enumerate(values)]
    batches = [messages[i:i + args.batch] for i in range(0, len(messages), args.batch)]
    raw = [[m.value() for m in b] for b in batches]
    decoded = [[e for e in decode(r, settings.batching.max_message_bytes)[0] if e is not None] for r in raw]
    extracted = [scorer.extractor.extract(d) for d in decoded]
    matrices = [x.matrix[x.valid] for x in extracted]
    scores = [runner.predict(m) for m in matrices]
    monitor = build_drift_monitor(settings)
    assert monitor is not None, "the demo model has a profile (streamscore/demo/fraud_model.profile.json)"

    def render() -> None:
        for b, d, s in zip(batches, decoded, scores, strict=True):
            paths: dict[str, list[Any]] = {}
            copied = [(n, gather(d, n, paths)) for n in scorer.copy_fields]
            rows = list(range(len(s)))
            score_records(b, rows, rows, copied, s, scorer.policy.indices(s), scorer.policy.labels,
                          (runner.name, runner.version), 0)

    def observe() -> None:
        for m, s in zip(matrices, scores, strict=True):
            monitor.observe(m, s)

    stages: dict[str, Callable[[], object]] = {
        "take values from messages": lambda: [[m.value() for m in b] for b in batches],
        "decode JSON": lambda: [decode(r, settings.batching.max_message_bytes) for r in raw],
        "extract features": lambda: [scorer.extractor.extract(d) for d in decoded],
        "model (onnxruntime)": lambda: [runner.predict(m) for m in matrices],
        "decisions": lambda: [scorer.policy.indices(s) for s in scores],
        "render output records": render,
        "drift monitor (observe)": observe,
        "whole Scorer.score": lambda: [scorer.score(b) for b in batches],
    }
    costs = {name: best_of(args.repeat, run) / args.events * 1e6 for name, run in stages.items()}
    width = max(map(len, costs))
    for name, micros in costs.items():
        print(f"{name:<{width}}  {micros:7.2f} us/event")
    print(json.dumps({"events": args.events, "batch": args.batch,
                      "us_per_event": {k: round(v, 3) for k, v in costs.items()},
                      "matrix_rows": int(np.sum([m.shape[0] for m in matrices]))}))


if __name__ == "__main__":
    main()
