"""Assembles a running service from settings through the plugin factories: model runner, engine,
destinations, committer, pipeline, HTTP. ``assemble`` connects nothing, so ``validate`` and ``run``
build (and refuse) exactly the same things."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamscore.breaker import Breaker
from streamscore.config import GraphModelSettings, SegmentGraph, Settings
from streamscore.core.batching import Batcher
from streamscore.core.challengers import Challenger, Challengers
from streamscore.core.graph import ModelGraph
from streamscore.core.records import SourceMessage
from streamscore.core.scorer import Scorer, ScoringSpec
from streamscore.core.segments import SegmentRouter
from streamscore.delivery.committers import build_committer, check_delivery
from streamscore.destinations.base import Destination, Outputs
from streamscore.destinations.kafka import ShadowTopic
from streamscore.engines.base import Engine, StreamApp
from streamscore.errors import ConfigError
from streamscore.metrics import Metrics, Totals
from streamscore.monitoring.drift import DriftMonitor
from streamscore.monitoring.profile import monitor_from_profile, profile_path, read_profile
from streamscore.pipeline import Pipeline
from streamscore.plugins import Plugins
from streamscore.registry.resolve import resolve_settings
from streamscore.reload import Models, Reloader
from streamscore.runners.base import ModelRunner
from streamscore.server import Health, HttpServer
from streamscore.serving.server import RestServer, rest_server

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
    challengers: Challengers
    drift: DriftMonitor | None = None


def assemble(settings: Settings, plugins: Plugins, metrics: Metrics | None = None) -> Parts:
    """Build runner, engine and destinations through the registries; raises ConfigError naming the key."""
    runner = build_runner(settings, plugins, metrics)
    engine = plugins.engines.get(settings.engine)(settings, transactional_id(settings))
    if isinstance(engine, StreamApp):
        return Parts(runner, engine, [], Challengers())
    destinations = [plugins.destinations.get(d.kind, f"destinations[{i}].kind")(d, settings, engine)
                    for i, d in enumerate(settings.outputs)]
    if settings.shadow is not None:
        destinations.append(ShadowTopic(engine.producer, settings.shadow.topic))
    check_delivery(settings.delivery, engine.transactions, destinations)
    return Parts(runner, engine, destinations, build_challengers(settings, plugins), build_drift_monitor(settings))


def build_challengers(settings: Settings, plugins: Plugins) -> Challengers:
    """The ``shadow`` and ``canary`` models, unloaded (registry references resolved)."""
    settings, _ = resolve_settings(settings)

    def challenger(key: str, model: GraphModelSettings) -> Challenger:
        cols = settings.feature_columns(model.features)
        width = settings.feature_width if cols is None else len(cols)
        runner = plugins.runners.get(model.kind, f"{key}.model.kind")(model, width)
        return Challenger(runner, None if cols is None else np.asarray(cols, dtype=np.intp), settings.feature_width)

    shadow, canary = settings.shadow, settings.canary
    return Challengers(None if shadow is None else challenger("shadow", shadow.model),
                       None if canary is None else challenger("canary", canary.model),
                       0.0 if canary is None else canary.share)


def build_runner(settings: Settings, plugins: Plugins, metrics: Metrics | None = None) -> ModelRunner:
    """The model runner: ``model`` through the runner registry, or a ``ModelGraph`` whose models are
    built through it (``metrics`` counts the rows each of them scores). Registry references are
    resolved here, each time: a runner built again after an alias moved takes the new version."""
    settings, _ = resolve_settings(settings)
    if settings.graph is None:
        assert settings.model is not None  # the settings require one or the other
        return plugins.runners.get(settings.model.kind)(settings.model, settings.feature_width)
    factories = {name: plugins.runners.get(m.kind, f"models.{name}.kind") for name, m in settings.models.items()}

    def build(name: str, width: int) -> ModelRunner:
        return factories[name](settings.models[name], width)

    count = None if metrics is None else metrics.count_stage
    columns = {name: settings.feature_columns(m.features) for name, m in settings.models.items()}
    if isinstance(settings.graph, SegmentGraph):
        return SegmentRouter(settings.graph, columns, settings.feature_width, build, count)
    return ModelGraph(settings.graph, columns, settings.feature_width, build, settings.decisions, count)


def report_models(runner: ModelRunner, metrics: Metrics, challengers: Sequence[ModelRunner] = ()) -> None:
    """``streamscore_model_info``: one series per loaded model (each model of a graph or segment
    router, and the shadow and canary), replacing what it said before a reload."""
    metrics.model_info.clear()
    loaded = runner.runners.values() if isinstance(runner, ModelGraph | SegmentRouter) else [runner]
    for model in [*loaded, *challengers]:
        metrics.model_info.labels(model.name, model.version, model.provider).set(1)


def serve(settings: Settings, plugins: Plugins | None = None) -> int:
    """``streamscore serve``: load the models and serve REST until SIGTERM/SIGINT; no Kafka."""
    metrics = Metrics()
    runner = build_runner(settings, plugins or Plugins.default(), metrics)
    runner.load()
    report_models(runner, metrics)
    server = rest_server(settings, runner, metrics)
    try:
        server.run()
    finally:
        runner.close()
    log.info("REST stopped")
    return 0


def build_drift_monitor(settings: Settings) -> DriftMonitor | None:
    """The drift monitor of the model's reference profile: ``monitoring.profile``, or the single
    model's ``NAME.profile.json`` when there is one; None when drift is off or no profile exists."""
    m = settings.monitoring
    path, found = m.profile, False
    if path is None and settings.model is not None and profile_path(settings.model.path).exists():
        path, found = profile_path(settings.model.path), True
    if not m.drift or path is None:
        return None
    try:
        monitor = monitor_from_profile(read_profile(path), settings.features, window_events=m.window_events,
                                       slots=m.slots, min_events=m.min_events)
    except ConfigError as exc:
        if not found:  # named in the configuration: refused like any other setting
            raise
        log.warning("no drift monitoring: the profile found next to the model does not fit (%s)", exc)
        return None
    log.info("drift monitoring against %s (window %d events)", path, m.window_events)
    return monitor


class Service:
    """One scoring process. ``run`` returns the process exit code."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None, plugins: Plugins | None = None,
                 serve: bool = False, reload: threading.Event | None = None) -> None:
        self.settings = settings
        self.serve = serve
        """Also serve REST (``serve`` section) over the same loaded models."""
        self.metrics = metrics or Metrics()
        self.plugins = plugins or Plugins.default()
        self.parts = assemble(settings, self.plugins, self.metrics)
        self.runner = self.parts.runner
        self.challengers = self.parts.challengers
        self.reload_requested = reload or threading.Event()
        """Set (by ``SIGHUP``) to reload the models."""
        self.reloader: Reloader | None = None
        self.scorer: Scorer | None = None
        self.health = Health()
        self.pipeline: Pipeline | None = None
        self.http: HttpServer | None = None
        self.rest: RestServer | None = None
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
        self.scorer = Scorer(ScoringSpec.from_settings(s), self.runner, self.challengers)
        drift, m = self.parts.drift, s.monitoring
        if drift is not None:
            self.metrics.watch_drift(drift, m.psi_threshold, m.default_rate_increase, m.unknown_rate_increase)
        self.pipeline = Pipeline(engine.source, self.scorer, outputs, committer, batcher, Breaker(s.breaker), b,
                                 self.metrics, self.health, leave_timeout=s.kafka.session_timeout_ms / 1000,
                                 drift=drift, between_batches=self.swap_model)
        assert self.reloader is not None
        self.reloader.start()
        return self.pipeline

    def swap_model(self) -> None:
        """Between two batches: put a newly loaded model version in, close the old one."""
        models = self.reloader.take() if self.reloader is not None else None
        if models is None or self.scorer is None:
            return
        runner = models.runner
        old = self.scorer.swap(runner, models.challengers)
        old_challengers, self.runner, self.challengers = self.challengers, runner, models.challengers
        if self.rest is None:  # else REST may be scoring on it still: freed when its last reference goes
            old.close()
        old_challengers.close()
        self.metrics.model_reloads.labels("ok").inc()
        self._model_info()
        log.info("model %s version %s now serving (was %s)", runner.name, runner.version, old.version)

    def _model_info(self) -> None:
        report_models(self.runner, self.metrics, self.challengers.runners)

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
        s = self.settings
        self.runner.load()
        self.challengers.load()
        self._model_info()
        self.reloader = Reloader(s, lambda: Models(build_runner(s, self.plugins, self.metrics),
                                                   build_challengers(s, self.plugins)),
                                 self.metrics, self.reload_requested)
        if self.serve:  # binds now: a taken serve.port is refused before the broker is contacted
            self.rest = rest_server(s, self.runner, self.metrics, current=lambda: self.runner)
        self.parts.engine.check(BROKER_CHECK_TIMEOUT)

    def _serve_http(self) -> None:
        s = self.settings
        if s.metrics.enabled:
            self.http = HttpServer(s.metrics.host, s.metrics.port, self.metrics.registry, self.health,
                                   self.metrics.status)
            self.http.start()
        if self.rest is not None:
            self.rest.start()

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
        if self.rest is not None:
            self.rest.stop()
            self.rest = None
        if self.reloader is not None:
            self.reloader.stop()
            self.reloader = None
        if self.http is not None:
            self.http.stop()
            self.http = None
        for destination in self.parts.destinations:
            destination.close()
        if not isinstance(self.parts.engine, StreamApp):
            self.parts.engine.producer.close()
        self.runner.close()
        self.challengers.close()
