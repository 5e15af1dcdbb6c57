"""One time budget shared by every step of a stop or a revoke, so that a stop bound is a real bound."""

from __future__ import annotations

import time
from collections.abc import Callable


class Deadline:
    """``seconds`` from creation; each step asks for what is left instead of taking a fresh timeout."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._at = clock() + seconds

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self._at - self._clock())

    @property
    def expired(self) -> bool:
        return self._clock() >= self._at
