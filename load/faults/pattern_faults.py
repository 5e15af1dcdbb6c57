"""Fault scenarios of the inference patterns (issue 12).

- ``kill9_cascade``: ``kill -9`` in the middle of a confidence-gated cascade (the second stage
  scoring the gated rows when the process dies), then a restart: every input must appear
  downstream, duplicates within the at-least-once bound.
"""

from __future__ import annotations

import random
from importlib.resources import as_file, files
from pathlib import Path

from load.faults.harness import InputStream, make_topics, write_config
from load.faults.scenarios import PER_FAULT, Env, Result, Scenario, Size, _finish, kill_and_restart

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FAST_FEATURES = ["amount", "hour", "card_age_days", "tx_count_1h", "tx_count_24h"]


def cascade_models() -> tuple[dict[str, object], dict[str, object]]:
    """``models`` and ``graph`` of examples/cascade.yaml, with absolute paths and the CPU."""
    with as_file(files("streamscore.demo") / "fraud_model.onnx") as demo:
        deep = str(demo)
    models = {"fast": {"path": str(EXAMPLES / "models" / "fast.onnx"), "features": FAST_FEATURES, "provider": "cpu"},
              "deep": {"path": deep, "provider": "cpu"}}
    return models, {"type": "cascade", "stages": ["fast", "deep"], "band": [0.5, 0.95]}


def kill9_cascade(env: Env, size: Size) -> Result:
    """``kill -9`` while a cascade scores (its second stage has scored gated rows), restart each time."""
    rng = random.Random(env.seed)
    models, graph = cascade_models()
    with env.broker() as (bootstrap, _broker):
        t = make_topics(bootstrap)
        config = write_config(env.workdir, bootstrap, t, model=None, models=models, graph=graph)
        stream = InputStream(bootstrap, t.source, size.events, size.rate, env.seed).start()
        kills, final = kill_and_restart(env, config, stream, size.faults, rng)
        mid_stream = sum(flowing or m.get("streamscore_uncommitted_events", 0.0) > 0 for m, flowing in kills)
        second_stage = sum(m.get('streamscore_graph_stage_rows_total{stage="deep"}', 0.0) > 0 for m, _ in kills)
        result = Result("kill -9 mid-cascade and restart", size.events, f"{size.faults} × kill -9", 0, 0,
                        size.faults * PER_FAULT)
        result.checks["every kill hit unfinished work (inputs arriving or uncommitted)"] = mid_stream == size.faults
        result.checks["the second stage had scored gated rows before each kill"] = second_stage == size.faults
        return _finish(env, bootstrap, t, stream, [final], result)


SCENARIOS: dict[str, Scenario] = {
    # one kill at CI size (the restart waits out the dead member's 6 s session): 3,000 events at 200/s.
    # On the embedded broker only: what a cascade adds to kill9 is in the service, not the broker
    # (kill9 itself runs on both), and on Apache Kafka its own broker made it a 94 s test
    "kill9-cascade": Scenario(kill9_cascade, Size(3_000, 1, 200), Size(100_000, 5, 1_200), brokers=("tansu",),
                              why_brokers="the cascade is the service's, and kill9 covers Apache Kafka"),
}
