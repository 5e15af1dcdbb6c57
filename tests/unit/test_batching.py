"""Batcher: closes at max_size or after max_wait of its first item; nothing lost or reordered."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamscore.batching import Batcher


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_full_batches_come_out_at_max_size() -> None:
    b: Batcher[int] = Batcher(3, 1.0, Clock())
    assert b.add([1, 2]) == []
    assert b.add([3, 4, 5, 6, 7, 8, 9]) == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert len(b) == 0 and b.remaining() is None


def test_time_window_starts_with_the_first_item() -> None:
    clock = Clock()
    b: Batcher[str] = Batcher(10, 0.5, clock)
    assert b.take_due() is None
    b.add(["a"])
    clock.now += 0.3
    b.add(["b"])
    assert b.remaining() == 0.5 - 0.3 or abs(b.remaining() - 0.2) < 1e-9  # type: ignore[operator]
    assert b.take_due() is None
    clock.now += 0.2
    assert b.take_due() == ["a", "b"]
    assert b.take_due() is None and b.remaining() is None


def test_a_new_window_opens_after_a_full_batch() -> None:
    clock = Clock()
    b: Batcher[int] = Batcher(2, 1.0, clock)
    b.add([1, 2, 3])
    clock.now += 0.9
    assert b.take_due() is None, "item 3 opened its own window when the full batch left"
    clock.now += 0.1
    assert b.take_due() == [3]


def test_take_drains_regardless_of_time() -> None:
    b: Batcher[int] = Batcher(5, 60.0, Clock())
    b.add([1, 2])
    assert b.take() == [1, 2]
    assert b.take() is None


@given(
    max_size=st.integers(1, 20),
    # multiples of 1/1024 add up exactly in binary floating point, so "waited" is unambiguous
    max_wait=st.integers(0, 2048).map(lambda n: n / 1024),
    steps=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 1024).map(lambda n: n / 1024)), max_size=40),
)
def test_nothing_lost_duplicated_or_oversized_and_due_exactly_on_time(
    max_size: int, max_wait: float, steps: list[tuple[int, float]]
) -> None:
    clock = Clock()
    b: Batcher[int] = Batcher(max_size, max_wait, clock)
    fed: list[int] = []
    out: list[int] = []
    opened: float | None = None
    for n, advance in steps:
        items = list(range(len(fed), len(fed) + n))
        fed += items
        was_empty = len(b) == 0
        full = b.add(items)
        for batch in full:
            assert len(batch) == max_size
            out += batch
        if len(b) and (was_empty or full):
            opened = clock.now  # the open batch's first item arrived now
        clock.now += advance
        waited = None if opened is None or not len(b) else clock.now - opened
        due = b.take_due()
        if waited is None:
            assert due is None
        elif waited >= max_wait:
            assert due is not None and 0 < len(due) < max_size, "due once its first item waited max_wait"
            out += due
            opened = None
        else:
            assert due is None, "never due early"
    out += b.take() or []
    assert out == fed
