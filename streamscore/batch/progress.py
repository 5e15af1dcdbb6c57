"""Progress of a batch run: a tqdm bar with rate and ETA on a terminal, a log line every
``LOG_INTERVAL`` seconds otherwise (a file or a log collector gets no control characters)."""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Any, Self

log = logging.getLogger(__name__)

LOG_INTERVAL = 10.0


class Progress:
    def __init__(self, total: int | None, already: int, bar: bool | None = None) -> None:
        self.total = total
        self.read = already
        self._bar: Any = None
        self._started = time.monotonic()
        self._next_log = self._started + LOG_INTERVAL
        self._at_start = already
        if bar if bar is not None else sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=already, unit=" rows", unit_scale=True, dynamic_ncols=True,
                             file=sys.stderr)

    def __enter__(self) -> Self:
        return self

    def advance(self, rows: int) -> None:
        self.read += rows
        if self._bar is not None:
            self._bar.update(rows)
            return
        now = time.monotonic()
        if now >= self._next_log:
            self._next_log = now + LOG_INTERVAL
            rate = (self.read - self._at_start) / max(1e-9, now - self._started)
            of = f" of {self.total}" if self.total is not None else ""
            eta = (f", about {(self.total - self.read) / rate:.0f}s left"
                   if self.total is not None and rate > 0 else "")
            log.info("batch: %d%s rows read, %.0f rows/s%s", self.read, of, rate, eta)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.close()
