"""Kafka topics as destinations: score records to a topic through the engine's producer (so that,
under exactly-once, they join its transactions)."""

from __future__ import annotations

from collections.abc import Sequence

from streamscore.config import DestinationSettings, Settings
from streamscore.core.records import ScoredBatch
from streamscore.engines.base import DeliveryCallback, Engine, Producer
from streamscore.errors import ConfigError


class KafkaTopic:
    """Each score record to ``topic``, keyed like its input."""

    transactional = True

    def __init__(self, producer: Producer, topic: str) -> None:
        self.name = f"kafka:{topic}"
        self._producer = producer
        self._topic = topic

    def start(self) -> None:
        """The engine starts its producer."""

    def write(self, keys: Sequence[bytes | None], batch: ScoredBatch, on_delivery: DeliveryCallback) -> None:
        self._producer.produce_many(self._topic, zip(keys, batch.outputs, strict=True), on_delivery)

    def poll(self, timeout: float) -> None:
        self._producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        return self._producer.flush(timeout)

    def close(self) -> None:
        """The engine closes its producer."""


class ShadowTopic(KafkaTopic):
    """The shadow model's records (``ScoredBatch.shadow``) to their own topic: one per scored event,
    like the score records, so they are tracked and committed the same way."""

    def write(self, keys: Sequence[bytes | None], batch: ScoredBatch, on_delivery: DeliveryCallback) -> None:
        records = batch.shadow.outputs if batch.shadow is not None else []
        self._producer.produce_many(self._topic, zip(keys, records, strict=True), on_delivery)


def kafka_topic(destination: DestinationSettings, settings: Settings, engine: Engine) -> KafkaTopic:
    """The ``kafka`` destination kind: ``topic`` (default ``kafka.destination_topic``), written by the
    engine's producer."""
    if destination.options:
        raise ConfigError(f"destinations: a kafka destination takes no options (got {sorted(destination.options)})")
    return KafkaTopic(engine.producer, destination.topic or settings.kafka.destination_topic)
