"""Offset tracker: commit positions never pass an event whose output is unacknowledged."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from streamscore.commits import OffsetTracker, Ticket

A, B = ("t", 0), ("t", 1)


def batch(tracker: OffsetTracker, spans: dict[tuple[str, int], tuple[int, int]]) -> Ticket:
    """Track a batch holding offsets [first, last] per partition; one output per event."""
    counts = {tp: last - first + 1 for tp, (first, last) in spans.items()}
    ticket = Ticket(sum(counts.values()))
    tracker.track(ticket, {tp: last for tp, (_, last) in spans.items()}, counts)
    return ticket


def ack_all(ticket: Ticket) -> None:
    for _ in range(ticket.size):
        ticket.ack(None)


def test_commits_wait_for_every_earlier_batch() -> None:
    tracker = OffsetTracker()
    first, second = batch(tracker, {A: (0, 9)}), batch(tracker, {A: (10, 19)})
    ack_all(second)
    assert tracker.committable() == {}, "a later ack cannot pass an earlier unacknowledged batch"
    first.ack(None)
    assert tracker.committable() == {}, "a partly acknowledged batch holds the position"
    for _ in range(first.size - 1):
        first.ack(None)
    assert tracker.committable() == {A: 20}


def test_partitions_advance_independently_but_a_shared_batch_holds_both() -> None:
    tracker = OffsetTracker()
    shared = batch(tracker, {A: (0, 4), B: (0, 4)})
    only_b = batch(tracker, {B: (5, 9)})
    ack_all(only_b)
    assert tracker.committable() == {}
    ack_all(shared)
    assert tracker.committable() == {A: 5, B: 10}


def test_committable_reports_only_moved_positions() -> None:
    tracker = OffsetTracker()
    ack_all(batch(tracker, {A: (0, 4)}))
    positions = tracker.committable()
    tracker.mark_committed(positions)
    assert tracker.committable() == {}
    ack_all(batch(tracker, {B: (0, 1)}))
    assert tracker.committable() == {B: 2}


def test_a_failed_delivery_blocks_its_partitions_forever_and_is_reported() -> None:
    tracker = OffsetTracker()
    failed = batch(tracker, {A: (0, 2)})
    failed.ack("boom")
    failed.ack(None)
    failed.ack(None)
    ack_all(batch(tracker, {A: (3, 5)}))
    ack_all(batch(tracker, {B: (0, 5)}))
    assert tracker.failure() == "boom"
    assert tracker.committable() == {B: 6}


def test_uncommitted_counts_until_a_commit_is_confirmed() -> None:
    tracker = OffsetTracker()
    ack_all(batch(tracker, {A: (0, 9), B: (0, 4)}))
    assert tracker.uncommitted == 15 and tracker.in_flight == 0
    positions = tracker.committable()
    assert tracker.uncommitted == 15, "acknowledged is not committed"
    tracker.mark_committed(positions)
    assert tracker.uncommitted == 0


def test_completed_returns_each_ticket_once_and_forget_drops_state() -> None:
    tracker = OffsetTracker()
    t1 = batch(tracker, {A: (0, 1)})
    batch(tracker, {B: (0, 1)})
    ack_all(t1)
    assert tracker.completed() == [t1]
    assert tracker.completed() == []
    tracker.forget([B])
    assert tracker.uncommitted == 2 and tracker.pending_partitions() == {A}


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_random_batches_and_ack_orders_never_commit_past_an_unacknowledged_event(data: st.DataObject) -> None:
    tracker = OffsetTracker()
    partitions = [("t", p) for p in range(3)]
    next_offset = {tp: 0 for tp in partitions}
    owner: dict[tuple[tuple[str, int], int], Ticket] = {}
    outputs: list[Ticket] = []
    rng = random.Random(data.draw(st.integers(0, 2**32 - 1)))
    committed: dict[tuple[str, int], int] = {}
    for _ in range(data.draw(st.integers(1, 25))):
        spans = {}
        for tp in rng.sample(partitions, rng.randint(1, 3)):
            n = rng.randint(1, 4)
            spans[tp] = (next_offset[tp], next_offset[tp] + n - 1)
            next_offset[tp] += n
        ticket = batch(tracker, spans)
        for tp, (first, last) in spans.items():
            for offset in range(first, last + 1):
                owner[(tp, offset)] = ticket
        outputs += [ticket] * ticket.size
        rng.shuffle(outputs)
        for _ in range(rng.randint(0, len(outputs))):
            outputs.pop().ack(None)
        positions = tracker.committable()
        for tp, position in positions.items():
            assert all(owner[(tp, o)].done for o in range(position)), "never past an unacknowledged event"
            assert position == next_offset[tp] or not owner[(tp, position)].done, "and as far as allowed"
        tracker.mark_committed(positions)
        committed.update(positions)
    assert tracker.uncommitted == sum(next_offset.values()) - sum(committed.values())
