"""The pipeline's guarantees with in-memory fakes of the source and sink (no broker)."""

from __future__ import annotations

from collections import Counter

import pytest

from streamscore.errors import DeliveryError
from tests.unit.fakes import FakeSink, FakeSource, messages, pipeline, run_until_consumed, settings


def test_every_event_is_written_once_and_commits_reach_the_end() -> None:
    msgs = messages(50, bad_every=9)
    source, sink = FakeSource(msgs), FakeSink()
    p = pipeline(source, sink, settings(max_batch_size=10))
    run_until_consumed(p, source, len(msgs))
    assert Counter(k for _, k, _ in sink.records) == Counter(m.key() for m in msgs)
    assert sum(1 for t, _, _ in sink.records if t == "transactions-dlq") == 3 * 6
    assert source.committed() == {("in", 0): 50, ("in", 1): 50, ("in", 2): 50}
    assert source.closed


def test_a_fatal_delivery_error_stops_without_committing_past_it() -> None:
    msgs = messages(40)
    source, sink = FakeSource(msgs), FakeSink(fail=lambda key: key == b"1-17")
    p = pipeline(source, sink, settings(max_batch_size=5))
    with pytest.raises(DeliveryError, match="broker said no"):
        run_until_consumed(p, source, len(msgs))
    committed = source.committed()
    assert committed.get(("in", 1), 0) <= 17, "never past the failed record"
    assert source.closed


def test_consumption_waits_when_the_uncommitted_window_is_full() -> None:
    msgs = messages(200)
    source, sink = FakeSource(msgs), FakeSink()
    sink.hold = True
    p = pipeline(source, sink, settings(max_batch_size=10, max_in_flight=40))
    p.start()
    polls_before = source.polls
    for _ in range(200):
        p.step()
    assert 40 <= source.polled <= 40 + 10, "the window bounds consumption (plus at most one batch)"
    assert source.commits == []
    assert source.paused == {("in", 0), ("in", 1), ("in", 2)}, "a full window pauses the partitions"
    assert source.polls - polls_before >= 150, "and polling goes on, so the consumer stays in its group"
    sink.hold = False
    for _ in range(200):
        p.step()
    assert source.polled > 100, "consumption resumes once outputs are acknowledged and committed"
    assert not source.paused


def test_revoked_partitions_are_drained_and_committed_before_release() -> None:
    msgs = messages(30, partitions=2)
    source, sink = FakeSource(msgs), FakeSink()
    source.revoke_after = 21
    p = pipeline(source, sink, settings(max_batch_size=100, max_wait_ms=10_000))
    p.start()
    for _ in range(4):
        p.step()
    assert source.commits, "revocation committed what was consumed so far"
    first = source.commits[0]
    assert first[("in", 0)] == sum(1 for m in msgs[:21] if m.partition() == 0)
    assert ("in", 0) not in p.assigned
