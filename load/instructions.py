"""Instructions per event of the scoring core, counted by valgrind's callgrind: a cost figure that
does not move with the machine's load, unlike seconds.

    python -m load.instructions [--events 5000] [--batch 1000] [--scope core|pipeline]

Two runs under ``valgrind --tool=callgrind`` generate the same 2N demo events and score N and 2N
of them (``Scorer.score``, demo model on the CPU, one onnxruntime thread so no spinning pool
blurs the count, and a fixed hash seed, one source of the 0.7% by which two runs of the same core
from two checkouts differed); their difference over N is the cost of one event, start-up cancelled out.

``--scope pipeline`` counts the whole stream loop instead (``load.edge``: the service's ``Pipeline``
over the real Kafka edge with in-memory librdkafka clients and real ``confluent_kafka.Message``s):
the core plus consuming, batching, offset tracking, writing, delivery reports, commits and metrics.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

RUNS = (1, 2)
"""Multiples of --events scored by the two runs."""


def child(events: int, score: int, batch: int, scope: str) -> None:
    """Score ``score`` of ``events`` generated events (run under valgrind by the parent)."""
    if scope == "pipeline":
        from load.edge import drain
        from streamscore.demo.transactions import TransactionGenerator

        generated = [v for _, v in TransactionGenerator(seed=7, malformed_rate=0.002).encoded(events)]
        drain(generated[:score], batch)
        return
    from importlib.resources import files

    from load.pipeline_throughput import BenchMessage
    from streamscore.config import load_settings
    from streamscore.core.scorer import Scorer, ScoringSpec
    from streamscore.demo.transactions import TransactionGenerator
    from streamscore.runners.onnx import OnnxRunner

    settings = load_settings(Path(str(files("streamscore.demo") / "config.yaml")), env={})
    model = settings.single_model.model_copy(update={"provider": "cpu", "intra_op_threads": 1})
    runner = OnnxRunner(model, settings.feature_width)
    runner.load()
    scorer = Scorer(ScoringSpec.from_settings(settings), runner)
    values = [v for _, v in TransactionGenerator(seed=7, malformed_rate=0.002).encoded(events)]
    messages = [BenchMessage(v, i) for i, v in enumerate(values)]
    for start in range(0, score, batch):
        scorer.score(messages[start:start + batch])


def instructions(events: int, score: int, batch: int, scope: str, workdir: Path) -> int:
    return callgrind_total(workdir / f"callgrind.{score}.out", "load.instructions", "--child", str(score),
                           "--events", str(events), "--batch", str(batch), "--scope", scope)


def callgrind_total(out: Path, module: str, *args: str) -> int:
    """Instructions callgrind counts for ``python -m module args`` (a fixed hash seed: repeatable)."""
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-m", module, *args],
                   check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    match = re.search(r"^(?:summary|totals):\s+(\d+)", out.read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit(f"no instruction total in {out}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--scope", choices=["core", "pipeline"], default="core",
                        help="the scoring core alone, or the whole stream loop without a broker (load.edge)")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    generated = args.events * max(RUNS)
    if args.child is not None:
        child(generated, args.child, args.batch, args.scope)
        return
    with tempfile.TemporaryDirectory() as tmp:
        counts: dict[int, Any] = {n: instructions(generated, n * args.events, args.batch, args.scope, Path(tmp))
                                   for n in RUNS}
    per_event = (counts[2] - counts[1]) / args.events
    what = "scoring core" if args.scope == "core" else "stream loop without a broker (load.edge)"
    print(f"{what}: {per_event:,.0f} instructions per event "
          f"(callgrind; {args.events:,} events in batches of {args.batch:,}; demo model, 1 onnxruntime thread)")


if __name__ == "__main__":
    main()
