"""Adaptive batching and a window that does not throttle: full batches on a backlog, no waiting
at low load, and commits early enough that a healthy pipeline never pauses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tests.unit.fakes import FakeSink, FakeSource, messages, pipeline, run_until_consumed, settings


class Trickle(FakeSource):
    """One event arrives per blocking poll; a non-blocking poll finds nothing more buffered."""

    def poll(self, max_messages: int, timeout: float) -> Sequence[Any]:
        if timeout == 0:
            self.polls += 1
            return []
        return super().poll(min(max_messages, 1), timeout)


def batch_sizes(p: Any) -> list[int]:
    sizes: list[int] = []
    score = p.scorer.score

    def recording(batch: Sequence[Any]) -> Any:
        sizes.append(len(batch))
        return score(batch)

    p.scorer.score = recording
    return sizes


def test_at_low_load_each_event_is_scored_in_the_turn_it_arrives() -> None:
    source, sink = Trickle(messages(5)), FakeSink()
    p = pipeline(source, sink, settings(max_batch_size=100, max_wait_ms=60_000))
    sizes = batch_sizes(p)
    p.start()
    for turn in range(1, 16):
        p.step()
        assert p.totals.consumed == turn, "scored at once, not after max_wait_ms (60 s here)"
    assert sizes == [1] * 15


def test_without_adaptive_batching_a_trickle_waits_for_the_count_or_the_time() -> None:
    source, sink = Trickle(messages(5)), FakeSink()
    p = pipeline(source, sink, settings(max_batch_size=10, max_wait_ms=60_000, adaptive=False))
    sizes = batch_sizes(p)
    p.start()
    for _ in range(15):
        p.step()
    assert sizes == [10], "one batch, closed by its count"


def test_a_backlog_makes_full_batches() -> None:
    msgs = messages(400)  # 1,200 events, handed out 300 per poll
    source, sink = FakeSource(msgs, chunk=300), FakeSink()
    p = pipeline(source, sink, settings(max_batch_size=100))
    sizes = batch_sizes(p)
    run_until_consumed(p, source, len(msgs))
    assert sizes == [100] * 12


def test_a_healthy_backlog_never_fills_the_window() -> None:
    """Commits come as soon as half the window is uncommitted, so the window never fills and the
    partitions are never paused while the destination keeps up."""
    msgs = messages(2000)  # 6,000 events
    source, sink = FakeSource(msgs, chunk=500), FakeSink()
    p = pipeline(source, sink, settings(max_batch_size=100, max_in_flight=1000, commit_interval_ms=60_000))
    run_until_consumed(p, source, len(msgs))
    assert p.metrics.pauses._value.get() == 0
    assert len(source.commits) >= 6000 // 1000, "commits every half window, not every commit interval"
    assert source.committed() == {("in", 0): 2000, ("in", 1): 2000, ("in", 2): 2000}


def test_pauses_are_counted() -> None:
    source, sink = FakeSource(messages(200)), FakeSink()
    sink.hold = True  # the destination stops acknowledging
    p = pipeline(source, sink, settings(max_batch_size=10, max_in_flight=40))
    p.start()
    for _ in range(50):
        p.step()
    assert p.metrics.pauses._value.get() == 1 and source.paused
