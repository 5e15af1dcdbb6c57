"""Factories with registries: model runners by ``model.kind``, engines by ``engine``, destinations by
``destinations[].kind``. A new runner, engine or destination is a module plus one ``register`` call;
the core is not edited. Registries are built per service (``Plugins.default()``), never global."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from streamscore.config import DestinationSettings, ModelSettings, Settings
from streamscore.destinations.base import Destination
from streamscore.engines.base import Engine, StreamApp
from streamscore.errors import ConfigError
from streamscore.runners.base import ModelRunner

F = TypeVar("F")

RunnerFactory = Callable[[ModelSettings, int], ModelRunner]
"""(model settings, feature width) -> an unloaded runner."""
EngineFactory = Callable[[Settings, "str | None"], "Engine | StreamApp"]
"""(settings, transactional id or None) -> an engine whose clients are not yet connected: one that
serves the pipeline (``Engine``), or one that runs its own stream loop (``StreamApp``)."""
DestinationFactory = Callable[[DestinationSettings, Settings, Engine], Destination]
"""(this destination's settings, all settings, the engine) -> an unstarted destination."""


class Registry(Generic[F]):
    """Factories by kind; ``create`` names the settings key when a kind is unknown."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._factories: dict[str, F] = {}

    def register(self, kind: str, factory: F) -> None:
        self._factories[kind] = factory

    def get(self, kind: str, key: str | None = None) -> F:
        try:
            return self._factories[kind]
        except KeyError:
            raise ConfigError(f"{key or self.key}: unknown kind {kind!r} (expected one of: "
                              f"{', '.join(sorted(self._factories))})") from None

    @property
    def kinds(self) -> list[str]:
        return sorted(self._factories)


@dataclass


class Plugins:
    runners: Registry[RunnerFactory] = field(default_factory=lambda: Registry("model.kind"))
    engines: Registry[EngineFactory] = field(default_factory=lambda: Registry("engine"))
    destinations: Registry[DestinationFactory] = field(default_factory=lambda: Registry("destinations[].kind"))

    @classmethod
    def default(cls) -> Plugins:
        """The built-in kinds: the ONNX runner, the confluent-kafka engine, Kafka topic and PostgreSQL
        table destinations."""
        from streamscore.destinations.kafka import kafka_topic
        from streamscore.engines.kafka import KafkaEngine
        from streamscore.runners.onnx import OnnxRunner

        plugins = cls()
        plugins.runners.register("onnx", OnnxRunner)
        plugins.engines.register("confluent-kafka", KafkaEngine)
        plugins.engines.register("faust", faust_engine)
        plugins.destinations.register("kafka", kafka_topic)
        plugins.destinations.register("postgresql", _postgresql)
        return plugins


def _postgresql(destination: DestinationSettings, settings: Settings, engine: Engine) -> Destination:
    """The ``postgresql`` kind, imported when a configuration names it (psycopg loads only then)."""
    from streamscore.destinations.postgres import postgres_table

    return postgres_table(destination, settings, engine)


def faust_engine(settings: Settings, transactional_id: str | None) -> StreamApp:
    """``engine: faust``, imported only when chosen (faust-streaming is optional)."""
    try:
        from streamscore.engines.faust_app import FaustEngine
    except ImportError as exc:
        raise ConfigError(f"engine: 'faust' needs faust-streaming installed ({exc})") from None
    return FaustEngine(settings, transactional_id)
