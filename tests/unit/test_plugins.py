"""New runners, engines and destinations plug in through the same factories the service uses,
without touching the core: a fake of each, registered and run through ``Service``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from streamscore.config import DestinationSettings, ModelSettings, Settings
from streamscore.core.records import ScoredBatch
from streamscore.engines.base import DeliveryCallback, Engine
from streamscore.engines.kafka import KafkaDeadLetters
from streamscore.errors import ConfigError
from streamscore.plugins import Plugins
from streamscore.service import Service
from tests.unit.fakes import FakeSink, FakeSource, messages, settings


class ConstantRunner:
    """``model.kind: constant``: every row scores 0.25."""

    provider = "cpu"

    def __init__(self, model: ModelSettings, width: int) -> None:
        self.name, self.version, self.width = model.name or "constant", "v1", width
        self.loaded = False

    def load(self) -> None:
        self.loaded = True

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        assert matrix.shape[1] == self.width
        return np.full(matrix.shape[0], 0.25, dtype=np.float32)

    def close(self) -> None: ...


class MemoryDestination:
    """``kind: memory``: keeps the records; acknowledges them only when ``release`` is set."""

    transactional = False

    def __init__(self, destination: DestinationSettings, settings: Settings, engine: Engine) -> None:
        self.name = "memory"
        self.records: list[bytes] = []
        self.pending: list[DeliveryCallback] = []
        self.release = bool(destination.options.get("release", True))
        self.started = False

    def start(self) -> None:
        self.started = True

    def write(self, keys: Sequence[bytes | None], batch: ScoredBatch, on_delivery: DeliveryCallback) -> None:
        self.records += batch.outputs
        self.pending += [on_delivery] * len(batch.outputs)

    def poll(self, timeout: float) -> None:
        if self.release:
            pending, self.pending = self.pending, []
            for callback in pending:
                callback(None)

    def flush(self, timeout: float) -> int:
        self.poll(timeout)
        return len(self.pending)

    def close(self) -> None: ...


class MemoryEngine:
    def __init__(self, settings: Settings, transactional_id: str | None) -> None:
        self.source = FakeSource(messages(20))
        self.producer = FakeSink()
        self.transactions = None
        self.dead_letters = KafkaDeadLetters(self.producer, settings.kafka.dead_letter_topic)  # type: ignore[arg-type]

    def check(self, timeout: float) -> None: ...


def plugins() -> tuple[Plugins, list[MemoryDestination]]:
    made: list[MemoryDestination] = []

    def memory(d: DestinationSettings, s: Settings, e: Engine) -> MemoryDestination:
        made.append(MemoryDestination(d, s, e))
        return made[-1]

    p = Plugins.default()
    p.runners.register("constant", ConstantRunner)
    p.engines.register("memory", MemoryEngine)
    p.destinations.register("memory", memory)
    return p, made


def config(**changes: Any) -> Settings:
    s = settings(max_batch_size=10)
    model = s.single_model.model_copy(update={"kind": "constant", "name": "const"})
    return s.model_copy(update={"engine": "memory", "model": model, "metrics": s.metrics.model_copy(
        update={"enabled": False}), **changes})


def test_fake_runner_engine_and_destinations_run_through_the_service_factories() -> None:
    registry, made = plugins()
    s = config(destinations=[DestinationSettings(kind="kafka"), DestinationSettings(kind="memory")])
    service = Service(s, plugins=registry)
    pipeline = service.start()
    engine = service.parts.engine
    assert isinstance(engine, MemoryEngine) and isinstance(service.runner, ConstantRunner) and service.runner.loaded
    assert made and made[0].started
    pipeline.start()
    for _ in range(50):
        pipeline.step()
    outputs = [v for t, _, v in engine.producer.records if t == s.kafka.destination_topic]
    assert len(outputs) == len(made[0].records) == 60, "both destinations got every score record"
    assert all(b'"score":0.25' in v and b'"model":"const"' in v for v in made[0].records)
    assert engine.source.committed() == {("in", 0): 20, ("in", 1): 20, ("in", 2): 20}


def test_an_offset_waits_for_every_destination() -> None:
    registry, made = plugins()
    s = config(destinations=[DestinationSettings(kind="kafka"),
                             DestinationSettings(kind="memory", options={"release": False})])
    service = Service(s, plugins=registry)
    pipeline = service.start()
    pipeline.start()
    for _ in range(50):
        pipeline.step()
    engine = service.parts.engine
    assert isinstance(engine, MemoryEngine)
    assert len(made[0].records) == 60 and not engine.producer.unacked, "Kafka acknowledged everything"
    assert engine.source.committed() == {}, "the memory destination has acknowledged nothing"
    made[0].release = True
    for _ in range(5):
        pipeline.step()
    assert engine.source.committed() == {("in", 0): 20, ("in", 1): 20, ("in", 2): 20}


def test_unknown_kinds_and_exactly_once_with_a_plain_destination_are_config_errors() -> None:
    registry, _ = plugins()
    with pytest.raises(ConfigError, match=r"destinations\[1\].kind: unknown kind 'nosql'"):
        Service(config(destinations=[DestinationSettings(), DestinationSettings(kind="nosql")]), plugins=registry)
    with pytest.raises(ConfigError, match="engine: unknown kind 'flink'"):
        Service(config(engine="flink"), plugins=registry)
    with pytest.raises(ConfigError, match="exactly_once needs an engine with transactions"):
        Service(config(delivery="exactly_once"), plugins=registry)
