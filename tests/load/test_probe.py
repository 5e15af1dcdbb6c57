"""The latency breakdown's pure parts: the probe reads what the service writes into a score
record, and the per-event join of score records with the inputs' arrival times."""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME

from load.probe import Arrivals, Stages, breakdown
from streamscore.config import load_settings
from streamscore.core.scorer import Scorer, ScoringSpec
from streamscore.demo.transactions import TransactionGenerator
from streamscore.runners.onnx import OnnxRunner
from tests.unit.fakes import Message

EVENT_MS = 1_700_000_000_000


class Output:
    """A score record as the probe consumes it, with its own Kafka timestamp."""

    def __init__(self, value: bytes, ts_type: int, ts: int) -> None:
        self._v, self._t = value, (ts_type, ts)

    def value(self) -> bytes: return self._v
    def timestamp(self) -> tuple[int, int]: return self._t


@pytest.fixture(scope="module")
def records() -> list[tuple[Message, bytes]]:
    """Real score records of the demo scorer, with the input each came from."""
    events = TransactionGenerator(seed=3).encoded(6)
    inputs = [Message("in", i % 2, i // 2, v, key=k, timestamp=(TIMESTAMP_CREATE_TIME, EVENT_MS + i // 2))
              for i, (k, v) in enumerate(events)]
    with as_file(files("streamscore.demo") / "config.yaml") as demo:
        settings = load_settings(Path(demo), env={})
        runner = OnnxRunner(settings.single_model, settings.feature_width)
        runner.load()
    scored = Scorer(ScoringSpec.from_settings(settings), runner).score(inputs)
    assert scored.scored == list(range(len(inputs)))
    return list(zip(inputs, scored.outputs, strict=True))


def test_stages_read_the_source_and_times_of_a_score_record(records: list[tuple[Message, bytes]]) -> None:
    stages = Stages()
    for _input, value in records:
        stages.add(Output(value, TIMESTAMP_LOG_APPEND_TIME, EVENT_MS + 50), now_ms=EVENT_MS + 60.5)
    assert list(stages.partition) == [m.partition() for m, _ in records]
    assert list(stages.offset) == [m.offset() for m, _ in records]
    assert list(stages.event) == [m.timestamp()[1] for m, _ in records]
    assert all(s > EVENT_MS for s in stages.scored)  # the wall clock when it was scored
    assert list(stages.appended) == [EVENT_MS + 50] * len(records)


def test_an_output_created_by_its_producer_has_no_append_time(records: list[tuple[Message, bytes]]) -> None:
    stages = Stages()
    stages.add(Output(records[0][1], TIMESTAMP_CREATE_TIME, EVENT_MS), now_ms=EVENT_MS + 1.0)
    assert list(stages.appended) == [-1]


def test_breakdown_joins_each_record_to_its_input_by_partition_and_offset() -> None:
    arrivals = Arrivals()
    # partition 1 was first read at offset 5; partition 0 from 0; arrival 2 ms after each event time
    for partition, offset in [(1, 5), (0, 0), (1, 6), (0, 1)]:
        arrivals.add(partition, offset, EVENT_MS + offset, EVENT_MS + offset + 2.0)
    stages = Stages()
    # each scored 3 ms after its arrival, appended 4 ms later, read 5 ms after that
    for partition, offset in [(0, 1), (1, 6), (1, 5), (0, 0)]:
        stages.partition.append(partition)
        stages.offset.append(offset)
        stages.event.append(EVENT_MS + offset)
        stages.scored.append(EVENT_MS + offset + 5)
        stages.appended.append(EVENT_MS + offset + 9)
        stages.received.append(EVENT_MS + offset + 14.0)
    stages.partition.append(0)  # one record whose input the bare consumer never saw
    stages.offset.append(7)
    stages.event.append(EVENT_MS)
    stages.scored.append(EVENT_MS + 1)
    stages.appended.append(-1)
    stages.received.append(EVENT_MS + 2.0)
    arrivals.commit_ms.extend([1.0, 3.0])

    rows = breakdown(stages, arrivals)
    p50 = {name: row["p50_ms"] for name, row in rows.items()}
    counts = {name: row["count"] for name, row in rows.items()}
    service = "service: a bare consumer has it -> scored (consume, intake wait, decode, features, model)"
    appended = "scored -> score record appended (render, produce, linger.ms, produce request)"
    assert p50["input: produced -> a bare consumer has it (all inputs)"] == 2.0
    assert p50[service] == 3.0 and counts[service] == 4
    assert p50[appended] == 4.0 and counts[appended] == 4
    assert p50["score record appended -> probe has it"] == 5.0
    assert counts["end to end (event time -> probe has it)"] == 5
    assert p50["bare synchronous offset commit (once a second)"] == 2.0
    assert np.isnan(arrivals.arrived_at(np.array([0, 2]), np.array([9, 0]))).all()
