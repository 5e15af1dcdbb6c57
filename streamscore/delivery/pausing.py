"""Backpressure: the source partitions are paused while the uncommitted window is full or the
model is down, and resumed with hysteresis, so that a busy pipeline does not flap."""

from __future__ import annotations

import logging

from streamscore.core.records import TopicPartition
from streamscore.engines.base import Source
from streamscore.metrics import Metrics

log = logging.getLogger(__name__)

RESUME_FRACTION = 0.75
"""Paused partitions resume once the uncommitted events fall below this share of the window."""


class Pausing:
    """Pauses rather than stops polling: the consumer stays in its group and serves rebalances."""

    def __init__(self, source: Source, max_in_flight: int, metrics: Metrics) -> None:
        self.source = source
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.paused = False

    def update(self, assigned: list[TopicPartition], uncommitted: int, model_down: bool) -> None:
        if (uncommitted >= self.max_in_flight or model_down) and not self.paused:
            self.paused = True
            self.source.pause(assigned)
            self.metrics.pauses.inc()
            log.debug("partitions paused (%d uncommitted, model %s)", uncommitted, "down" if model_down else "up")
        elif self.paused and not model_down and uncommitted < self.max_in_flight * RESUME_FRACTION:
            self.paused = False
            self.source.resume(assigned)

    def joined(self, partitions: list[TopicPartition]) -> None:
        """Newly assigned partitions join paused, like the ones they join."""
        if self.paused:
            self.source.pause(partitions)
