"""Offset tracker: a commit position never passes an event whose output is not acknowledged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from streamscore.core.records import TopicPartition
from streamscore.delivery.tracker import OffsetTracker, Ticket

A, B, C = ("t", 0), ("t", 1), ("u", 0)

Spans = dict[TopicPartition, tuple[int, int]]


def track(tracker: OffsetTracker, spans: Spans) -> Ticket:
    """Track a batch holding offsets [first, last] per partition, one output per event."""
    counts = {tp: last - first + 1 for tp, (first, last) in spans.items()}
    ticket = Ticket(sum(counts.values()), payload=dict(spans))
    tracker.track(ticket, {tp: last for tp, (_, last) in spans.items()}, counts)
    return ticket


def ack_all(ticket: Ticket, err: Any = None) -> None:
    for _ in range(ticket.pending):
        ticket.ack(err)


@pytest.fixture
def tracker() -> OffsetTracker:
    return OffsetTracker()


@pytest.fixture
def batch(tracker: OffsetTracker) -> Callable[[Spans], Ticket]:
    return lambda spans: track(tracker, spans)


def test_a_ticket_counts_its_outputs_and_keeps_the_first_error() -> None:
    ticket = Ticket(3, payload="p")
    assert ticket.payload == "p" and ticket.pending == 3 and not ticket.done
    ticket.ack(None)
    ticket.ack("first", object())
    ticket.ack("second")
    assert ticket.pending == 0 and ticket.error == "first"
    assert not ticket.done, "a failed ticket is never done"
    assert Ticket(0).done, "a batch with no outputs is done at once"


def test_nothing_tracked_nothing_to_commit(tracker: OffsetTracker) -> None:
    assert tracker.committable() == {}
    assert tracker.in_flight == 0 and tracker.uncommitted == 0
    assert tracker.completed() == [] and tracker.failure() is None
    assert tracker.pending_partitions() == set()


def test_commit_position_is_last_offset_plus_one(tracker: OffsetTracker, batch: Callable[[Spans], Ticket]) -> None:
    ack_all(batch({A: (0, 9)}))
    assert tracker.committable() == {A: 10}


def test_out_of_order_acks_wait_for_every_earlier_batch(
    tracker: OffsetTracker, batch: Callable[[Spans], Ticket]
) -> None:
    first, second, third = batch({A: (0, 4)}), batch({A: (5, 9)}), batch({A: (10, 14)})
    ack_all(third)
    ack_all(second)
    assert tracker.committable() == {}, "later acks cannot pass an earlier unacknowledged batch"
    for _ in range(first.size - 1):
        first.ack(None)
    assert tracker.committable() == {}, "a partly acknowledged batch holds the position"
    first.ack(None)
    assert tracker.committable() == {A: 15}, "and once it is done, everything after it that is done goes too"


def test_acks_across_partitions_only_hold_their_own_partition(
    tracker: OffsetTracker, batch: Callable[[Spans], Ticket]
) -> None:
    a1, b1, a2, b2 = batch({A: (0, 2)}), batch({B: (0, 2)}), batch({A: (3, 5)}), batch({B: (3, 5)})
    ack_all(b2)
    ack_all(a1)
    assert tracker.committable() == {A: 3}
    ack_all(b1)
    assert tracker.committable() == {A: 3, B: 6}
    ack_all(a2)
    assert tracker.committable() == {A: 6, B: 6}


def test_a_batch_spanning_two_partitions_holds_both(
    tracker: OffsetTracker, batch: Callable[[Spans], Ticket]
) -> None:
    shared = batch({A: (0, 4), B: (10, 14)})
    only_b = batch({B: (15, 19)})
    only_a = batch({A: (5, 6)})
    ack_all(only_b)
    ack_all(only_a)
    assert tracker.committable() == {}
    assert tracker.pending_partitions() == {A, B}
    ack_all(shared)
    assert tracker.committable() == {A: 7, B: 20}
    assert tracker.pending_partitions() == set()


def test_default_counts_spread_a_ticket_over_its_partitions(tracker: OffsetTracker) -> None:
    ticket = Ticket(7)
    tracker.track(ticket, {A: 3, B: 1})
    assert tracker.uncommitted == 7
    ack_all(ticket)
    tracker.mark_committed(tracker.committable())
    assert tracker.uncommitted == 0
    tracker.track(Ticket(5), {C: 9})
    assert tracker.uncommitted == 5


def test_a_failed_delivery_blocks_its_partitions_forever_but_not_others(
    tracker: OffsetTracker, batch: Callable[[Spans], Ticket]
) -> None:
    ok_a = batch({A: (0, 1)})
    failed = batch({A: (2, 3), B: (0, 1)})
    later_a, later_b, other = batch({A: (4, 5)}), batch({B: (2, 3)}), batch({C: (0, 3)})
    ack_all(ok_a)
    failed.ack(None)
    failed.ack("broker said no")
    failed.ack(None)
    failed.ack("and again")
    for t in (later_a, later_b, other):
        ack_all(t)
    assert tracker.failure() == "broker said no"
    assert tracker.committable() == {A: 2, C: 4}, "never past the failed batch; other partitions go on"
    tracker.mark_committed({A: 2, C: 4})
    for offset in range(4, 7):
        ack_all(batch({C: (offset, offset)}))
        ack_all(batch({A: (offset + 2, offset + 2), B: (offset, offset)}))
        assert tracker.committable() == {C: offset + 1}
        tracker.mark_committed({C: offset + 1})
    assert failed not in tracker.completed(), "a failed ticket never completes"
    assert tracker.failure() == "broker said no", "and stays reported"
    assert tracker.pending_partitions() == {A, B}


def test_failure_reports_the_earliest_failed_ticket(tracker: OffsetTracker, batch: Callable[[Spans], Ticket]) -> None:
    first, second = batch({A: (0, 0)}), batch({B: (0, 0)})
    second.ack("late")
    assert tracker.failure() == "late"
    first.ack("early")
    assert tracker.failure() == "early", "in tracking order"


def test_committable_returns_only_positions_that_moved_since_mark_committed(
    tracker: OffsetTracker, batch: Callable[[Spans], Ticket]
) -> None:
    ack_all(batch({A: (0, 4), B: (0, 1)}))
    positions = tracker.committable()
    assert positions == {A: 5, B: 2}
    assert tracker.committable() == positions, "not yet confirmed: offered again"
    tracker.mark_committed(positions)
    assert tracker.committable() == {}
    ack_all(batch({B: (2, 3)}))
    assert tracker.committable() == {B: 4}
    tracker.mark_committed({B: 4})
    assert tracker.committable() == {}


def test_a_partial_confirmation_keeps_offering_the_rest(
    tracker: OffsetTracker, batch: Callable[[Spans], Ticket]
) -> None:
    ack_all(batch({A: (0, 4), B: (0, 1)}))
    assert tracker.committable() == {A: 5, B: 2}
    tracker.mark_committed({A: 5})  # B's commit did not go through
    assert tracker.committable() == {B: 2}
    assert tracker.uncommitted == 2


def test_uncommitted_counts_until_a_commit_is_confirmed(
    tracker: OffsetTracker, batch: Callable[[Spans], Ticket]
) -> None:
    t1 = batch({A: (0, 9), B: (0, 4)})
    t2 = batch({A: (10, 11)})
    assert tracker.uncommitted == 17
    ack_all(t1)
    positions = tracker.committable()
    assert tracker.uncommitted == 17, "acknowledged is not committed"
    tracker.mark_committed(positions)
    assert tracker.uncommitted == 2
    ack_all(t2)
    tracker.mark_committed(tracker.committable())
    assert tracker.uncommitted == 0


def test_in_flight_counts_unacknowledged_outputs(tracker: OffsetTracker, batch: Callable[[Spans], Ticket]) -> None:
    t1, t2 = batch({A: (0, 2)}), batch({B: (0, 1)})
    assert tracker.in_flight == 5
    t1.ack(None)
    t2.ack("err")
    assert tracker.in_flight == 3, "a failed output is no longer in flight"
    ack_all(t1)
    tracker.completed()
    assert tracker.in_flight == 1


def test_completed_returns_each_done_ticket_once_in_order(
    tracker: OffsetTracker, batch: Callable[[Spans], Ticket]
) -> None:
    t1, t2, t3 = batch({A: (0, 1)}), batch({B: (0, 1)}), batch({A: (2, 3)})
    ack_all(t3)
    ack_all(t1)
    assert tracker.completed() == [t1, t3], "a ticket completes on its own acks, not its position"
    assert tracker.completed() == []
    ack_all(t2)
    assert tracker.completed() == [t2]
    assert tracker.completed() == []


def test_forget_drops_a_partitions_state(tracker: OffsetTracker, batch: Callable[[Spans], Ticket]) -> None:
    done_a = batch({A: (0, 1)})
    batch({A: (2, 3), B: (0, 1)})
    ack_all(done_a)
    tracker.mark_committed(tracker.committable())
    assert tracker.uncommitted == 4
    tracker.forget([A])
    assert tracker.uncommitted == 2, "only B's share of the shared batch is left"
    assert tracker.pending_partitions() == {B}
    assert tracker.committable() == {}
    ack_all(batch({A: (100, 104)}))
    assert tracker.committable() == {A: 105}, "a re-assigned partition starts afresh"
    tracker.forget([B, ("never", 9)])
    assert tracker.uncommitted == 5 and tracker.pending_partitions() == set()


def test_forget_drops_acknowledged_but_unconfirmed_positions(
    tracker: OffsetTracker, batch: Callable[[Spans], Ticket]
) -> None:
    ack_all(batch({A: (0, 4)}))
    assert tracker.committable() == {A: 5}
    tracker.forget([A])
    assert tracker.committable() == {} and tracker.uncommitted == 0


class TrackerMachine(RuleBasedStateMachine):
    """Random batches over random partitions, acks in random order (a few failing), commits, revocations.

    After every step, each commit position p of a partition satisfies: every tracked offset of that
    partition below p belongs to a fully acknowledged ticket, and p is the largest such position.
    """

    PARTITIONS = (A, B, C, ("u", 1))

    def __init__(self) -> None:
        super().__init__()
        self.tracker = OffsetTracker()
        self.next_offset = dict.fromkeys(self.PARTITIONS, 0)
        self.owner: dict[TopicPartition, dict[int, Ticket]] = {tp: {} for tp in self.PARTITIONS}
        self.tickets: list[Ticket] = []
        self.unacked: list[Ticket] = []  # one entry per output not yet acknowledged
        self.committed: dict[TopicPartition, int] = {}  # positions confirmed through mark_committed
        self.offered: dict[TopicPartition, int] = {}  # the latest position committable() gave per partition
        self.returned: set[int] = set()
        self.outputs = 0
        self.acks = 0

    @rule(data=st.data())
    def consume_a_batch(self, data: st.DataObject) -> None:
        tps = data.draw(st.lists(st.sampled_from(self.PARTITIONS), min_size=1, max_size=3, unique=True))
        spans: Spans = {}
        for tp in tps:
            gap = data.draw(st.sampled_from([0, 0, 0, 1, 5]))  # compaction and transaction markers skip offsets
            first = self.next_offset[tp] + gap
            last = first + data.draw(st.integers(0, 4))
            spans[tp] = (first, last)
            self.next_offset[tp] = last + 1
        ticket = track(self.tracker, spans)
        for tp, (first, last) in spans.items():
            for offset in range(first, last + 1):
                self.owner[tp][offset] = ticket
        self.tickets.append(ticket)
        self.unacked += [ticket] * ticket.size
        self.outputs += ticket.size

    @precondition(lambda self: self.unacked)
    @rule(data=st.data(), err=st.sampled_from([None] * 15 + ["broker said no"]))
    def acknowledge_one_output(self, data: st.DataObject, err: str | None) -> None:
        i = data.draw(st.integers(0, len(self.unacked) - 1))
        self.unacked.pop(i).ack(err)
        self.acks += 1

    @rule()
    def commit(self) -> None:
        positions = self.tracker.committable()
        self.offered.update(positions)
        self.tracker.mark_committed(positions)
        self.committed.update(positions)

    @rule()
    def collect_completed(self) -> None:
        done = self.tracker.completed()
        assert done == [t for t in self.tickets if t.done and id(t) not in self.returned], (
            "every done ticket, once, in tracking order")
        self.returned.update(id(t) for t in done)

    @rule(tp=st.sampled_from(PARTITIONS))
    def revoke(self, tp: TopicPartition) -> None:
        self.tracker.forget([tp])
        self.owner[tp] = {}
        self.committed.pop(tp, None)
        self.offered.pop(tp, None)

    def largest_position(self, tp: TopicPartition) -> int | None:
        """The largest p with every tracked offset below it fully acknowledged (None: nothing done yet)."""
        position = None
        for offset, ticket in sorted(self.owner[tp].items()):
            if not ticket.done:
                break
            position = offset + 1
        return position

    @invariant()
    def tracker_agrees_with_the_model(self) -> None:
        moved = self.tracker.committable()
        for tp, p in moved.items():
            assert all(t.done for o, t in self.owner[tp].items() if o < p), "never past an unacknowledged event"
            assert self.committed.get(tp) != p, "only positions that moved since mark_committed"
        self.offered.update(moved)
        for tp in self.PARTITIONS:
            largest = self.largest_position(tp)
            assert self.offered.get(tp) == largest, (tp, self.offered.get(tp), largest)
            if tp not in moved:
                assert largest is None or self.committed.get(tp) == largest
        assert self.tracker.in_flight == self.outputs - self.acks
        assert self.tracker.failure() == next((t.error for t in self.tickets if t.error is not None), None)
        assert self.tracker.uncommitted == sum(
            1 for tp, owners in self.owner.items() for o in owners if o >= self.committed.get(tp, -1))
        assert self.tracker.pending_partitions() == {
            tp for tp, owners in self.owner.items() if any(not t.done for t in owners.values())}


TrackerMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
TestTrackerMachine = TrackerMachine.TestCase
