"""What every peer script shares: its command line and its timing record (standard library only;
the scripts run in the peers' own environments, where the ``load`` package is not importable)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

FETCH_WAIT_MS = 10
"""``fetch.wait.max.ms`` for every variant, as streamscore's demo configuration sets it: the
embedded broker holds a fetch until this wait runs out, so a longer wait throttles any consumer."""

BATCH = 5000
"""Events per micro-batch where a peer batches (the tight loop, Bytewax, Faust)."""


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    for name in ("bootstrap", "source", "out", "dlq", "group", "job", "result"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--events", type=int, required=True, help="stop once this many events are processed")
    parser.add_argument("--batch", type=int, default=BATCH)
    return parser.parse_args()


class Clock:
    """First event consumed, last output acknowledged and offsets committed: ``time.monotonic``
    (CLOCK_MONOTONIC, so the driver could compare it with its own)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.ended = 0.0
        self.consumed = 0

    def consume(self, n: int) -> None:
        if not self.started:
            self.started = time.monotonic()
        self.consumed += n

    def end(self) -> None:
        self.ended = time.monotonic()

    def write(self, path: str, **extra: Any) -> None:
        Path(path).write_text(json.dumps({"started": self.started, "ended": self.ended,
                                          "consumed": self.consumed, **extra}))
