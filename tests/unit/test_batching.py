"""Batcher: closes at max_size or once its first item has waited max_wait; nothing lost, duplicated or reordered.

Time comes from a fake clock: no test sleeps.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscore.core.batching import Batcher


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_batcher(clock: FakeClock) -> Callable[[int, float], Batcher[int]]:
    def make(max_size: int, max_wait: float) -> Batcher[int]:
        return Batcher(max_size, max_wait, clock)

    return make


@pytest.mark.parametrize(("max_size", "max_wait"), [(0, 1.0), (-1, 1.0), (1, -0.001)])
def test_rejects_impossible_limits(max_size: int, max_wait: float) -> None:
    with pytest.raises(ValueError, match=r"max_size|max_wait"):
        Batcher(max_size, max_wait, FakeClock())


def test_empty_batcher_has_nothing_to_give(make_batcher: Callable[[int, float], Batcher[int]]) -> None:
    b = make_batcher(3, 0.0)
    assert len(b) == 0
    assert b.remaining() is None
    assert b.take_due() is None
    assert b.take() is None
    assert b.add([]) == []
    assert b.remaining() is None, "adding nothing opens no window"


def test_a_batch_closes_as_soon_as_it_is_full(make_batcher: Callable[[int, float], Batcher[int]]) -> None:
    b = make_batcher(3, 60.0)
    assert b.add([1, 2]) == []
    assert len(b) == 2
    assert b.add([3]) == [[1, 2, 3]]
    assert len(b) == 0 and b.remaining() is None and b.take() is None


def test_one_big_add_returns_several_full_batches_oldest_first(
    make_batcher: Callable[[int, float], Batcher[int]],
) -> None:
    b = make_batcher(3, 60.0)
    assert b.add([0]) == []
    assert b.add(list(range(1, 11))) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert len(b) == 2
    assert b.take() == [9, 10]


def test_max_size_one_gives_one_batch_per_item(make_batcher: Callable[[int, float], Batcher[int]]) -> None:
    b = make_batcher(1, 60.0)
    assert b.add([7, 8, 9]) == [[7], [8], [9]]
    assert b.remaining() is None


def test_accepts_any_sequence(clock: FakeClock) -> None:
    b: Batcher[str] = Batcher(2, 1.0, clock)
    assert b.add(("a", "b", "c")) == [["a", "b"]]
    assert b.add("de") == [["c", "d"]]
    assert b.take() == ["e"]


def test_returned_batches_are_not_shared_with_the_batcher(make_batcher: Callable[[int, float], Batcher[int]]) -> None:
    b = make_batcher(2, 1.0)
    (full,) = b.add([1, 2])
    full.append(99)
    b.add([3])
    assert b.take() == [3]


def test_remaining_counts_down_from_the_first_item(
    clock: FakeClock, make_batcher: Callable[[int, float], Batcher[int]]
) -> None:
    b = make_batcher(10, 0.5)
    b.add([1])
    assert b.remaining() == 0.5
    clock.advance(0.125)
    b.add([2])  # a later item does not restart the window
    assert b.remaining() == 0.375
    clock.advance(0.25)
    assert b.remaining() == 0.125
    assert b.take_due() is None, "never due before max_wait"
    clock.advance(0.125)
    assert b.remaining() == 0.0
    assert b.take_due() == [1, 2], "due exactly when the first item has waited max_wait"
    assert b.remaining() is None and b.take_due() is None


def test_not_due_a_hair_before_max_wait(clock: FakeClock, make_batcher: Callable[[int, float], Batcher[int]]) -> None:
    b = make_batcher(10, 0.5)
    b.add([1])
    clock.advance(0.5 - 2**-20)
    assert b.remaining() == 2**-20
    assert b.take_due() is None
    clock.advance(2**-20)
    assert b.take_due() == [1]


def test_remaining_is_zero_not_negative_when_overdue(
    clock: FakeClock, make_batcher: Callable[[int, float], Batcher[int]]
) -> None:
    b = make_batcher(10, 0.5)
    b.add([1])
    clock.advance(30.0)
    assert b.remaining() == 0.0
    assert b.take_due() == [1]


def test_zero_max_wait_is_due_at_once(make_batcher: Callable[[int, float], Batcher[int]]) -> None:
    b = make_batcher(10, 0.0)
    b.add([1, 2])
    assert b.remaining() == 0.0
    assert b.take_due() == [1, 2]


def test_leftover_of_a_full_batch_opens_a_new_window_at_that_add(
    clock: FakeClock, make_batcher: Callable[[int, float], Batcher[int]]
) -> None:
    b = make_batcher(2, 1.0)
    b.add([1])
    clock.advance(0.75)
    assert b.add([2, 3]) == [[1, 2]]
    assert b.remaining() == 1.0, "item 3 waits a full max_wait of its own"
    clock.advance(0.75)
    assert b.take_due() is None
    clock.advance(0.25)
    assert b.take_due() == [3]


def test_window_of_a_batch_opened_after_a_drain_starts_fresh(
    clock: FakeClock, make_batcher: Callable[[int, float], Batcher[int]]
) -> None:
    b = make_batcher(5, 1.0)
    b.add([1])
    clock.advance(0.5)
    assert b.take() == [1]
    clock.advance(0.75)
    b.add([2])
    assert b.remaining() == 1.0


def test_take_drains_whether_due_or_not(make_batcher: Callable[[int, float], Batcher[int]]) -> None:
    b = make_batcher(5, 60.0)
    b.add([1, 2])
    assert b.take_due() is None
    assert b.take() == [1, 2]
    assert b.take() is None and len(b) == 0


def test_default_clock_is_monotonic_seconds() -> None:
    b: Batcher[int] = Batcher(5, 3600.0)
    b.add([1])
    remaining = b.remaining()
    assert remaining is not None and 3599.0 < remaining <= 3600.0
    assert b.take_due() is None


# Multiples of 1/1024 add up exactly in binary floating point, so "has waited max_wait" is unambiguous.
DYADIC = st.integers(0, 2048).map(lambda n: n / 1024)


@settings(max_examples=300, deadline=None)
@given(
    max_size=st.integers(1, 16),
    max_wait=DYADIC,
    steps=st.lists(st.tuples(st.integers(0, 40), DYADIC, st.sampled_from(["due", "due", "due", "drain"])),
                   max_size=40),
)
def test_random_feeding_loses_nothing_duplicates_nothing_and_is_never_early(
    max_size: int, max_wait: float, steps: list[tuple[int, float, str]]
) -> None:
    clock = FakeClock()
    b: Batcher[int] = Batcher(max_size, max_wait, clock)
    fed: list[int] = []
    batches: list[list[int]] = []
    opened: float | None = None  # when the open batch's first item arrived (the model's view)
    for chunk, advance, action in steps:
        items = list(range(len(fed), len(fed) + chunk))
        fed += items
        # the model: items fill the open batch; each full one leaves; the next item opens a new window
        expected_full = []
        pending = len(b)
        for _ in items:
            if pending == 0:
                opened = clock.now
            pending += 1
            if pending == max_size:
                expected_full.append(max_size)
                pending = 0
                opened = None
        full = b.add(items)
        assert [len(f) for f in full] == expected_full
        assert len(b) == pending
        batches += full
        clock.advance(advance)

        remaining = b.remaining()
        if opened is None:
            assert remaining is None
        else:
            assert remaining == max(0.0, opened + max_wait - clock.now)
        if action == "drain":
            taken = b.take()
            assert (taken is None) == (opened is None)
        else:
            taken = b.take_due()
            waited = None if opened is None else clock.now - opened
            if waited is None or waited < max_wait:
                assert taken is None, "never due before its first item has waited max_wait"
            else:
                assert taken is not None, "due once its first item has waited max_wait"
        if taken is not None:
            assert 0 < len(taken) < max_size, "a full batch leaves at add(), never through the window"
            batches.append(taken)
            opened = None
    batches.append(b.take() or [])
    assert all(len(batch) <= max_size for batch in batches)
    assert [x for batch in batches for x in batch] == fed, "concatenated batches equal the input, in order"
    assert len(b) == 0 and b.remaining() is None
