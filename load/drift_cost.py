"""Instructions per event of the drift monitor (``DriftMonitor.observe``), counted by callgrind.

    python -m load.drift_cost [--events 2000] [--batch 500] [--repeat 200]

Two runs under ``valgrind --tool=callgrind`` do the same work, scoring N demo events in batches as
``load.instructions`` does, and then feed the scored batches to the monitor of the demo model's
profile once, or 1 + ``--repeat`` times: the difference of their totals over ``repeat`` x N is the
monitor's cost per event, everything else cancelled out. The repeats are there because the
monitor is cheap: the start-up (imports, model load) of two runs differs by more than N events of
monitoring. Compare it with ``load.instructions`` (the whole scoring core).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from load.instructions import callgrind_total


def child(events: int, observed: int, batch: int) -> None:
    """Score ``events`` events, then feed ``observed`` of them to the drift monitor."""
    from importlib.resources import files

    from load.pipeline_throughput import BenchMessage
    from streamscore.config import load_settings
    from streamscore.core.scorer import Scorer, ScoringSpec
    from streamscore.demo.transactions import TransactionGenerator
    from streamscore.runners.onnx import OnnxRunner
    from streamscore.service import build_drift_monitor

    settings = load_settings(Path(str(files("streamscore.demo") / "config.yaml")), env={})
    model = settings.single_model.model_copy(update={"provider": "cpu", "intra_op_threads": 1})
    runner = OnnxRunner(model, settings.feature_width)
    runner.load()
    scorer = Scorer(ScoringSpec.from_settings(settings), runner)
    monitor = build_drift_monitor(settings)
    assert monitor is not None, "the demo model has a profile (streamscore/demo/fraud_model.profile.json)"
    values = [v for _, v in TransactionGenerator(seed=7, malformed_rate=0.002).encoded(events)]
    messages = [BenchMessage(v, i) for i, v in enumerate(values)]
    results = [scorer.score(messages[start:start + batch]) for start in range(0, events, batch)]
    fed = 0
    while fed < observed:
        for result in results:
            if fed >= observed:
                break
            assert result.features is not None
            monitor.observe(result.features, result.scores)
            fed += batch
    monitor.snapshot()


def instructions(events: int, observed: int, batch: int, workdir: Path) -> int:
    return callgrind_total(workdir / f"callgrind.{observed}.out", "load.drift_cost", "--child", str(observed),
                           "--events", str(events), "--batch", str(batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.events, args.child, args.batch)
        return
    with tempfile.TemporaryDirectory() as tmp:
        once, more = (instructions(args.events, n * args.events, args.batch, Path(tmp)) for n in (1, 1 + args.repeat))
    print(f"drift monitor: {(more - once) / (args.repeat * args.events):,.0f} instructions per event "
          f"(callgrind; DriftMonitor.observe on the demo profile's 8 features and score, batches of {args.batch:,})")


if __name__ == "__main__":
    main()
