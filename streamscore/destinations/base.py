"""The interface every destination implements, and the fan-out the pipeline writes through."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from streamscore.core.records import DeadLetter, ScoredBatch
from streamscore.engines.base import DeadLetterSink, DeliveryCallback


class Destination(Protocol):
    """Receives the score records of each batch and acknowledges each record once through
    ``on_delivery(error_or_none)``; an input offset is committed only when every destination has
    acknowledged its output."""

    name: str
    """For logs and errors: ``kafka:scores``, say."""
    transactional: bool
    """Whether its writes join the engine's transactions (required under exactly-once)."""

    def start(self) -> None:
        """Open connections; raises ConfigError/BrokerError naming the key."""

    def write(self, keys: Sequence[bytes | None], batch: ScoredBatch, on_delivery: DeliveryCallback) -> None:
        """Write ``batch.outputs`` (one per scored event, with its input's key)."""

    def poll(self, timeout: float) -> None:
        """Serve acknowledgements, waiting at most ``timeout`` seconds."""

    def flush(self, timeout: float) -> int:
        """Wait for acknowledgements; returns how many records are still unacknowledged."""
        ...

    def close(self) -> None: ...


class Outputs:
    """Every destination plus the dead-letter sink, as one: the pipeline writes, polls and flushes here."""

    def __init__(self, destinations: Sequence[Destination], dead_letters: DeadLetterSink) -> None:
        if not destinations:
            raise ValueError("at least one destination")
        self.destinations = list(destinations)
        self.dead_letters = dead_letters

    def records_for(self, batch: ScoredBatch) -> int:
        """How many acknowledgements one batch's outputs bring: one per destination per score
        record, one per dead letter."""
        return len(batch.outputs) * len(self.destinations) + len(batch.rejections)

    def write(self, keys: Sequence[bytes | None], batch: ScoredBatch, letters: Sequence[DeadLetter],
              on_delivery: DeliveryCallback) -> None:
        for destination in self.destinations:
            destination.write(keys, batch, on_delivery)
        if letters:
            self.dead_letters.write_dead_letters(letters, on_delivery)

    def poll(self, timeout: float) -> None:
        """Serve acknowledgements; only the first waits (up to ``timeout``)."""
        for part in self._parts():
            part.poll(timeout)
            timeout = 0.0

    def flush(self, timeout: float) -> int:
        """Flush each destination and the dead letters in turn, within ``timeout`` seconds in all;
        returns how many records are still unacknowledged."""
        until = time.monotonic() + timeout
        return sum(part.flush(max(0.0, until - time.monotonic())) for part in self._parts())

    def _parts(self) -> list[Destination | DeadLetterSink]:
        return [*self.destinations, self.dead_letters]

    def start(self) -> None:
        for destination in self.destinations:
            destination.start()

    def close(self) -> None:
        for destination in self.destinations:
            destination.close()
