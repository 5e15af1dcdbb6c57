"""From the source into batches: count and time windows, or adaptive (the default), where a batch
also closes as soon as the consumer has nothing more buffered."""

from __future__ import annotations

from streamscore.core.batching import Batcher
from streamscore.core.records import SourceMessage
from streamscore.engines.base import Source

Batch = list[SourceMessage]


class Intake:
    """Polls the source into the batcher and hands back the batches that closed, oldest first."""

    def __init__(self, source: Source, batcher: Batcher[SourceMessage], adaptive: bool) -> None:
        self.source = source
        self.batcher = batcher
        self.adaptive = adaptive

    def batches(self) -> list[Batch]:
        return self._adaptive() if self.adaptive else self._windowed()

    def hold(self) -> None:
        """While nothing can be scored: keep what still arrives, close no batch."""
        self.batcher.hold(self.source.poll(self.batcher.max_size, 0.1))

    def _windowed(self) -> list[Batch]:
        """Closed by count, or by time once the first event has waited ``max_wait``."""
        batcher = self.batcher
        remaining = batcher.remaining()
        timeout = min(max(batcher.max_wait if remaining is None else remaining, 0.001), 0.1)
        closed = batcher.add(self.source.poll(batcher.max_size - len(batcher), timeout))
        due = batcher.take_due()
        return [*closed, due] if due else closed

    def _adaptive(self) -> list[Batch]:
        """Wait only for a batch's first event; then take what the consumer has buffered, and close
        the batch as soon as it has nothing more, it is full or ``max_wait`` has passed. A backlog
        makes full batches, a trickle single events at once."""
        batcher = self.batcher
        closed: list[Batch] = []
        if not len(batcher):
            closed += batcher.add(self.source.poll(1, 0.1))  # returns as soon as one event is there
            if not len(batcher):
                return closed
        more = self.source.poll(batcher.max_size - len(batcher), 0)
        closed += batcher.add(more)
        if not more or batcher.remaining() == 0:
            rest = batcher.take()
            if rest:
                closed.append(rest)
        return closed
