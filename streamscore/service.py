"""Assembles a running service from settings through the plugin factories: model runner, engine,
destinations, committer, pipeline, HTTP. ``assemble`` connects nothing, so ``validate`` and ``run``
build (and refuse) exactly the same things."""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass

from streamscore.breaker import Breaker
from streamscore.config import Settings
from streamscore.core.batching import Batcher
from streamscore.core.graph import ModelGraph
from streamscore.core.records import SourceMessage
from streamscore.core.scorer import Scorer, ScoringSpec
from streamscore.delivery.committers import build_committer, check_delivery
from streamscore.destinations.base import Destination, Outputs
from streamscore.engines.base import Engine, StreamApp
from streamscore.metrics import Metrics, Totals
from streamscore.pipeline import Pipeline
from streamscore.plugins import Plugins
from streamscore.runners.base import ModelRunner
from streamscore.server import Health, HttpServer

log = logging.getLogger(__name__)

BROKER_CHECK_TIMEOUT = 10.0


def transactional_id(settings: Settings) -> str | None:
    """The producer's transactional.id under exactly-once: stable for this host, so a restarted
    instance fences its predecessor and aborts the transaction it left open."""
    if settings.delivery != "exactly_once":
        return None
    return settings.kafka.transactional_id or f"streamscore-{settings.kafka.group_id}-{socket.gethostname()}"


@dataclass(frozen=True)
class Parts:
    """Everything a service is made of, built but not started."""

    runner: ModelRunner
    engine: Engine | StreamApp
    destinations: list[Destination]
    """The pipeline's destinations (none for a ``StreamApp``, which writes its outputs itself)."""


def assemble(settings: Settings, plugins: Plugins, metrics: Metrics | None = None) -> Parts:
    """Build runner, engine and destinations through the registries; raises ConfigError naming the key."""
    runner = build_runner(settings, plugins, metrics)
    engine = plugins.engines.get(settings.engine)(settings, transactional_id(settings))
    if isinstance(engine, StreamApp):
        return Parts(runner, engine, [])
    destinations = [plugins.destinations.get(d.kind, f"destinations[{i}].kind")(d, settings, engine)
                    for i, d in enumerate(settings.outputs)]
    check_delivery(settings.delivery, engine.transactions, destinations)
    return Parts(runner, engine, destinations)


def build_runner(settings: Settings, plugins: Plugins, metrics: Metrics | None = None) -> ModelRunner:
    """The model runner: ``model`` through the runner registry, or a ``ModelGraph`` whose models are
    built through it (``metrics`` counts the rows each of them scores)."""
    if settings.graph is None:
        assert settings.model is not None  # the settings require one or the other
        return plugins.runners.get(settings.model.kind)(settings.model, settings.feature_width)
    factories = {name: plugins.runners.get(m.kind, f"models.{name}.kind") for name, m in settings.models.items()}

    def build(name: str, width: int) -> ModelRunner:
        return factories[name](settings.models[name], width)

    count = None if metrics is None else metrics.count_stage
    columns = {name: settings.feature_columns(m.features) for name, m in settings.models.items()}
    return ModelGraph(settings.graph, columns, settings.feature_width, build, settings.decisions, count)


class Service:
    """One scoring process. ``run`` returns the process exit code."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None, plugins: Plugins | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.parts = assemble(settings, plugins or Plugins.default(), self.metrics)
        self.runner = self.parts.runner
        self.health = Health()
        self.pipeline: Pipeline | None = None
        self.http: HttpServer | None = None
        self._prepared = False

    def start(self) -> Pipeline:
        """Load and check everything; raises ConfigError/ModelError/BrokerError before consuming."""
        s, engine = self.settings, self.parts.engine
        assert not isinstance(engine, StreamApp), "a StreamApp runs its own loop: run() it"
        self._load_and_check()
        engine.producer.start()
        outputs = Outputs(self.parts.destinations, engine.dead_letters)
        outputs.start()
        self._serve_http()
        b = s.batching
        batcher: Batcher[SourceMessage] = Batcher(b.max_batch_size, b.max_wait_ms / 1000.0)
        committer = build_committer(s.delivery, engine.source, outputs, batcher, self.metrics, b.drain_timeout_s,
                                    engine.transactions)
        scorer = Scorer(ScoringSpec.from_settings(s), self.runner)
        self.pipeline = Pipeline(engine.source, scorer, outputs, committer, batcher, Breaker(s.breaker), b,
                                 self.metrics, self.health, leave_timeout=s.kafka.session_timeout_ms / 1000)
        return self.pipeline

    @property
    def totals(self) -> Totals:
        """What the stream did so far, whichever engine runs it."""
        if isinstance(self.parts.engine, StreamApp):
            return self.parts.engine.totals
        return self.pipeline.totals if self.pipeline else Totals()

    @property
    def assigned(self) -> int:
        """Source partitions this instance owns now."""
        if isinstance(self.parts.engine, StreamApp):
            return self.parts.engine.assigned
        return len(self.pipeline.assigned) if self.pipeline else 0

    def prepare(self) -> None:
        """Load the model, check the broker and serve /metrics: what ``start`` does before consuming
        (``run`` calls it for an engine with its own loop, unless done already)."""
        if isinstance(self.parts.engine, StreamApp):
            if not self._prepared:
                self._load_and_check()
                self._serve_http()
                self._prepared = True
            return
        self.start()

    def _load_and_check(self) -> None:
        self.runner.load()
        loaded = self.runner.runners.values() if isinstance(self.runner, ModelGraph) else [self.runner]
        for runner in loaded:  # a graph: each of its models
            self.metrics.model_info.labels(runner.name, runner.version, runner.provider).set(1)
        self.parts.engine.check(BROKER_CHECK_TIMEOUT)

    def _serve_http(self) -> None:
        s = self.settings
        if s.metrics.enabled:
            self.http = HttpServer(s.metrics.host, s.metrics.port, self.metrics.registry, self.health)
            self.http.start()

    def run(self, stop: threading.Event | None = None) -> int:
        stop = stop or threading.Event()
        if isinstance(self.parts.engine, StreamApp):
            return self._run_app(self.parts.engine, stop)
        pipeline = self.pipeline or self.start()
        if stop.is_set():  # asked to stop while starting: nothing consumed, nothing to drain
            self.close()
            log.info("stopped before consuming")
            return 0
        try:
            drained = pipeline.run(stop)
        finally:
            self.close()
        t = pipeline.totals
        log.info("stopped: consumed %d, scored %d, dead-lettered %d", t.consumed, t.scored, t.dead_lettered)
        return 0 if drained else 1

    def _run_app(self, engine: StreamApp, stop: threading.Event) -> int:
        """An engine with its own stream loop: it gets the scoring core, the metrics and the health."""
        try:
            self.prepare()
            if stop.is_set():
                log.info("stopped before consuming")
                return 0
            drained = engine.run_stream(ScoringSpec.from_settings(self.settings), self.runner, self.metrics,
                                        self.health, stop)
        finally:
            self.close()
        t = engine.totals
        log.info("stopped: consumed %d, scored %d, dead-lettered %d", t.consumed, t.scored, t.dead_lettered)
        return 0 if drained else 1

    def close(self) -> None:
        if self.http is not None:
            self.http.stop()
            self.http = None
        for destination in self.parts.destinations:
            destination.close()
        if not isinstance(self.parts.engine, StreamApp):
            self.parts.engine.producer.close()
        self.runner.close()
