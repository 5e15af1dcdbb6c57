"""``wait_for``: poll a condition until it holds or a deadline passes; shared by the fault harness
and the tests (through ``tests.support``)."""

from __future__ import annotations

import time
from collections.abc import Callable


class WaitTimeout(AssertionError):
    """A condition did not hold within its timeout."""


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> None:
    """Return once ``condition()`` is true; ``WaitTimeout`` naming ``what`` after ``timeout`` seconds.

    The condition is tried once more at the deadline, so a slow last poll is not lost."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
