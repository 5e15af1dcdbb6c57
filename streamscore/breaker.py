"""The circuit breaker for model outages: when the model itself fails, stop, retry with backoff,
and give up after ``breaker.max_outage_s`` rather than dead-letter a healthy stream."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from streamscore.config import BreakerSettings
from streamscore.errors import ModelUnavailable

log = logging.getLogger(__name__)


class Breaker:
    """Closed: batches are scored. Open: the model failed by itself; nothing is scored until a retry,
    due after a backoff that doubles each time, succeeds. Open longer than ``max_outage_s``: give up."""

    def __init__(self, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self.open = False
        self._opened_at = 0.0
        self._backoff = settings.initial_backoff_s
        self._retry_at = 0.0

    def trip(self, error: ModelUnavailable) -> None:
        """The model failed: open (or stay open, backing off further). Raises ``error`` once the
        outage has lasted ``max_outage_s``."""
        now = self._clock()
        if not self.open:
            self.open = True
            self._opened_at = now
            self._backoff = self.settings.initial_backoff_s
            log.error("model unavailable (%s): consumption paused, retrying for up to %gs", error,
                      self.settings.max_outage_s)
        else:
            self._backoff = min(self._backoff * 2, self.settings.max_backoff_s)
        if now - self._opened_at >= self.settings.max_outage_s:
            raise ModelUnavailable(f"the model failed for {now - self._opened_at:.0f}s "
                                   f"(breaker.max_outage_s {self.settings.max_outage_s:g}): {error}") from error
        self._retry_at = min(now + self._backoff, self._opened_at + self.settings.max_outage_s)

    @property
    def retry_due(self) -> bool:
        return self.open and self._clock() >= self._retry_at

    def close(self) -> None:
        """A retry succeeded."""
        if self.open:
            log.warning("model recovered after %.1fs: consumption resumes", self._clock() - self._opened_at)
        self.open = False
