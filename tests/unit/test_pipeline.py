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


SCORES, LETTERS = "transaction-scores", "transactions-dlq"


def letters_of(sink: FakeSink) -> list[tuple[bytes | None, dict[str, bytes | None]]]:
    """The dead letters a sink received: key and headers."""
    return [(k, dict(h)) for (t, k, _), h in zip(sink.records, sink.headers, strict=True) if t == LETTERS]


def test_an_output_too_large_dead_letters_its_input_and_nothing_else() -> None:
    msgs = messages(40)
    source, sink = FakeSource(msgs), FakeSink(too_large=lambda topic, key: topic == SCORES and key == b"1-17")
    p = pipeline(source, sink, settings(max_batch_size=5))
    run_until_consumed(p, source, len(msgs))
    [(key, headers)] = letters_of(sink)
    assert key == b"1-17"
    assert headers["streamscore.reason"] == b"output_too_large"
    assert headers["streamscore.source.partition"] == b"1" and headers["streamscore.source.offset"] == b"17"
    detail = (headers["streamscore.detail"] or b"").decode()
    assert f"{SCORES}[0]" in detail and " bytes" in detail and "Message size too large" in detail
    value = next(v for t, k, v in sink.records if t == LETTERS)
    assert value == msgs[17 * 3 + 1].value(), "the input, whole: it is under the 1 KiB sample"
    assert Counter(k for t, k, _ in sink.records if t == SCORES) == Counter(m.key() for m in msgs), \
        "each output written once: the refusal was not retried, the other outputs of its batch unaffected"
    assert source.committed() == {("in", 0): 40, ("in", 1): 40, ("in", 2): 40}
    assert p.metrics.dead_lettered.labels("output_too_large")._value.get() == 1
    assert (p.totals.consumed, p.totals.scored, p.totals.dead_lettered) == (120, 119, 1)
    assert p.metrics.delivery_failures._value.get() == 0


def test_an_output_too_large_for_two_destinations_makes_one_dead_letter() -> None:
    msgs = messages(20)
    source, sink = FakeSource(msgs), FakeSink(too_large=lambda topic, key: topic != LETTERS and key == b"0-4")
    p = pipeline(source, sink, settings(max_batch_size=5), more_topics=["archive"])
    run_until_consumed(p, source, len(msgs))
    assert [k for k, _ in letters_of(sink)] == [b"0-4"]
    assert source.committed() == {("in", 0): 20, ("in", 1): 20, ("in", 2): 20}
    assert p.metrics.dead_lettered.labels("output_too_large")._value.get() == 1


class LettersHeld(FakeSink):
    """Acknowledges dead letters only once ``release`` is set."""

    release = False

    def _ack_all(self) -> None:
        held = [u for u in self.unacked if u[2] == LETTERS and not self.release]
        self.unacked = [u for u in self.unacked if u not in held]
        super()._ack_all()
        self.unacked = held


def test_the_input_of_an_output_too_large_is_committed_only_after_its_dead_letter_is_acknowledged() -> None:
    msgs = messages(20)
    source, sink = FakeSource(msgs), LettersHeld(too_large=lambda topic, key: topic == SCORES and key == b"1-7")
    p = pipeline(source, sink, settings(max_batch_size=5))
    p.start()
    for _ in range(50):
        p.step()
    assert source.polled == len(msgs) and [k for k, _ in letters_of(sink)] == [b"1-7"]
    committed = source.committed()
    assert committed.get(("in", 1), 0) == 7, "up to, not past, the input whose dead letter is unacknowledged"
    sink.release = True
    p.step()
    assert source.committed() == {("in", 0): 20, ("in", 1): 20, ("in", 2): 20}


def test_a_dead_letter_too_large_for_its_own_topic_stops_the_service_naming_it() -> None:
    msgs = messages(40)
    source, sink = FakeSource(msgs), FakeSink(too_large=lambda topic, key: key == b"1-17")
    p = pipeline(source, sink, settings(max_batch_size=5))
    with pytest.raises(DeliveryError, match=f"an output to {LETTERS}.* too large"):
        run_until_consumed(p, source, len(msgs))
    assert source.committed().get(("in", 1), 0) <= 17, "never past the event with no output"
