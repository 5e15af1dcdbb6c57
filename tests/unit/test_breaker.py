"""The model breaker: a model that fails by itself dead-letters nothing, makes the service unready,
and ends it non-zero after ``breaker.max_outage_s``; one that recovers lets consumption resume."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
import pytest

from streamscore.breaker import Breaker
from streamscore.config import BreakerSettings
from streamscore.errors import ModelUnavailable
from streamscore.pipeline import Pipeline
from tests.unit.fakes import EVENT, FakeSink, FakeSource, messages, pipeline, run_until_consumed, settings


class FailingRunner:
    """Raises on every call (a GPU out of memory, a broken runtime) until ``healthy_at``."""

    name, version, provider = "flaky", "1", "cpu"

    def __init__(self, healthy_at: float = float("inf")) -> None:
        self.healthy_at = healthy_at
        self.calls = 0

    def load(self) -> None: ...
    def close(self) -> None: ...

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        self.calls += 1
        if time.monotonic() < self.healthy_at:
            raise RuntimeError("CUDA failure 2: out of memory")
        return np.zeros(matrix.shape[0], dtype=np.float32)


def breaker_settings(max_outage_s: float) -> BreakerSettings:
    return BreakerSettings(max_outage_s=max_outage_s, initial_backoff_s=0.02, max_backoff_s=0.1)


def with_breaker(max_outage_s: float, **batching: float) -> object:
    return settings(**batching).model_copy(update={"breaker": breaker_settings(max_outage_s)})


def watch_readiness(p: Pipeline) -> list[bool]:
    """Readiness after each step of ``p``."""
    readiness: list[bool] = []
    step = p.step

    def watched_step() -> None:
        step()
        readiness.append(p.health.ready)

    p.step = watched_step  # type: ignore[method-assign]
    return readiness


def test_a_model_down_for_good_dead_letters_nothing_and_ends_the_run_non_zero() -> None:
    msgs = messages(20)
    source, sink = FakeSource(msgs), FakeSink()
    runner = FailingRunner()
    p = pipeline(source, sink, with_breaker(0.4, max_batch_size=10), runner=runner)  # type: ignore[arg-type]
    readiness = watch_readiness(p)
    started = time.monotonic()
    with pytest.raises(ModelUnavailable, match="max_outage_s"):
        p.run(threading.Event())
    assert 0.4 <= time.monotonic() - started < 5
    assert sink.records == [], "nothing scored, nothing dead-lettered"
    assert source.committed() == {}, "nothing committed: whoever takes the partitions over scores them"
    down = readiness.index(False)
    assert not any(readiness[down:]), "unready from the first failure on"
    assert source.paused, "consumption stopped"
    assert p.metrics.breaker_open._value.get() == 1
    assert runner.calls < 40, "a failing model is retried with backoff, not bisected row by row"
    assert source.closed


def test_a_model_that_recovers_lets_consumption_resume_with_nothing_lost() -> None:
    msgs = messages(30, bad_every=7)
    source, sink = FakeSource(msgs), FakeSink()
    runner = FailingRunner(healthy_at=time.monotonic() + 0.3)
    p = pipeline(source, sink, with_breaker(30, max_batch_size=10), runner=runner)  # type: ignore[arg-type]
    readiness = watch_readiness(p)
    run_until_consumed(p, source, len(msgs))
    assert False in readiness and readiness[-1], "unready while the model was down, ready again after"
    assert Counter(k for _, k, _ in sink.records) == Counter(m.key() for m in msgs), "every event written once"
    dead = [k for t, k, _ in sink.records if t == "transactions-dlq"]
    assert len(dead) == 3 * 5, "only the malformed events are dead-lettered"
    assert source.committed() == {("in", 0): 30, ("in", 1): 30, ("in", 2): 30}
    assert not p.breaker.open and not source.paused
    assert p.metrics.model_failures._value.get() >= 1
    assert p.metrics.breaker_open._value.get() == 0


def test_rows_that_make_the_model_raise_are_still_isolated() -> None:
    """A failure the probe row does not share is the rows': bisection dead-letters just them."""

    class RaisesOnBigAmounts(FailingRunner):
        def predict(self, matrix: np.ndarray) -> np.ndarray:
            if (matrix[:, 0] > 100).any():
                raise RuntimeError("Gather index out of range")
            return np.zeros(matrix.shape[0], dtype=np.float32)

    msgs = messages(10)
    msgs[4]._v = orjson.dumps({**EVENT, "amount": 500.0})
    source, sink = FakeSource(msgs), FakeSink()
    p = pipeline(source, sink, with_breaker(30, max_batch_size=10), runner=RaisesOnBigAmounts())  # type: ignore[arg-type]
    run_until_consumed(p, source, len(msgs))
    dead = [k for t, k, _ in sink.records if t == "transactions-dlq"]
    assert dead == [msgs[4].key()]
    assert not p.breaker.open


def test_backoff_doubles_up_to_its_maximum_and_gives_up_after_the_outage_limit() -> None:
    now = [0.0]
    breaker = Breaker(BreakerSettings(max_outage_s=10, initial_backoff_s=1, max_backoff_s=3), clock=lambda: now[0])
    error = ModelUnavailable("down")
    breaker.trip(error)
    waits = []
    while True:
        start = now[0]
        while not breaker.retry_due:
            now[0] += 0.25
        waits.append(now[0] - start)
        if now[0] >= 10:
            with pytest.raises(ModelUnavailable, match="max_outage_s"):
                breaker.trip(error)
            break
        breaker.trip(error)
    assert waits[:3] == [1, 2, 3] and now[0] == 10


class WritesBeforeCommits(FakeSource):
    """Checks at every commit that each event below a committed position has its output written."""

    def __init__(self, messages: list[Any], sink: FakeSink, chunk: int) -> None:
        super().__init__(messages, chunk=chunk)
        self.sink = sink

    def commit(self, positions: Mapping[tuple[str, int], int], asynchronous: bool) -> None:
        written = {k for _, k, _ in self.sink.records}
        for (topic, partition), position in positions.items():
            behind = [m.key() for m in self.all if (m.topic(), m.partition()) == (topic, partition)
                      and m.offset() < position and m.key() not in written]
            assert not behind, f"committed {topic}[{partition}]@{position} before writing {behind[:3]}"
        super().commit(positions, asynchronous)


def test_no_commit_passes_an_event_held_while_the_model_was_down() -> None:
    """Events held while the model is down are scored in their order once it is back: no commit
    ever covers an event whose output was not written."""
    msgs = messages(30)  # 90 events, up to 90 per poll
    sink = FakeSink()
    source = WritesBeforeCommits(msgs, sink, chunk=90)
    runner = FailingRunner(healthy_at=time.monotonic() + 0.2)
    p = pipeline(source, sink, with_breaker(30, max_batch_size=10), runner=runner)  # type: ignore[arg-type]
    run_until_consumed(p, source, len(msgs))
    assert Counter(k for _, k, _ in sink.records) == Counter(m.key() for m in msgs)
    assert source.committed() == {("in", 0): 30, ("in", 1): 30, ("in", 2): 30}
