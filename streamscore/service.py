"""Assembles a running service from settings: model, broker checks, clients, HTTP, pipeline."""

from __future__ import annotations

import logging
import signal
import socket
import threading
from types import FrameType

from streamscore.config import Settings
from streamscore.engines.kafka import KafkaSink, KafkaSource, check_broker
from streamscore.errors import BrokerError
from streamscore.metrics import Metrics
from streamscore.pipeline import Pipeline
from streamscore.runners.base import ModelRunner
from streamscore.runners.onnx import OnnxRunner
from streamscore.scoring import Scorer
from streamscore.server import Health, HttpServer

log = logging.getLogger(__name__)

BROKER_CHECK_TIMEOUT = 10.0


def transactional_id(settings: Settings) -> str | None:
    """The producer's transactional.id under exactly-once: stable for this host, so a restarted
    instance fences its predecessor and aborts the transaction it left open."""
    if settings.delivery != "exactly_once":
        return None
    return settings.kafka.transactional_id or f"streamscore-{settings.kafka.group_id}-{socket.gethostname()}"


def build_runner(settings: Settings) -> ModelRunner:
    return OnnxRunner(settings.model, settings.feature_width)


def check_topics(settings: Settings, timeout: float = BROKER_CHECK_TIMEOUT) -> None:
    """The broker answers and the output topics exist (raises BrokerError naming the key)."""
    topics = check_broker(settings.kafka, timeout)
    for key in ("destination_topic", "dead_letter_topic"):
        name = getattr(settings.kafka, key)
        if name not in topics:
            raise BrokerError(f"kafka.{key}: topic {name!r} does not exist on {settings.kafka.bootstrap_servers}")
    missing = [t for t in settings.kafka.source_topics if t not in topics]
    if missing:
        log.warning("source topics %s do not exist yet; waiting for them", missing)


class Service:
    """One scoring process. ``run`` returns the process exit code."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None,
                 runner: ModelRunner | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.runner = runner or build_runner(settings)
        self.health = Health()
        self.pipeline: Pipeline | None = None
        self.http: HttpServer | None = None

    def start(self) -> Pipeline:
        """Load and check everything; raises ConfigError/ModelError/BrokerError before consuming."""
        s = self.settings
        self.runner.load()
        self.metrics.model_info.labels(self.runner.name, self.runner.version, self.runner.provider).set(1)
        check_topics(s)
        b = s.batching
        queue = max(100_000, b.max_in_flight + 2 * b.max_batch_size)
        sink = KafkaSink(s.kafka, queue, b.max_message_bytes, transactional_id(s), b.drain_timeout_s)
        sink.start()
        if s.metrics.enabled:
            self.http = HttpServer(s.metrics.host, s.metrics.port, self.metrics.registry, self.health)
            self.http.start()
        scorer = Scorer(s, self.runner)
        self.pipeline = Pipeline(s, KafkaSource(s.kafka), sink, scorer, self.metrics, self.health)
        return self.pipeline

    def run(self, stop: threading.Event | None = None) -> int:
        stop = stop or threading.Event()
        pipeline = self.pipeline or self.start()
        try:
            drained = pipeline.run(stop)
        finally:
            self.close()
        t = pipeline.totals
        log.info("stopped: consumed %d, scored %d, dead-lettered %d", t.consumed, t.scored, t.dead_lettered)
        return 0 if drained else 1

    def close(self) -> None:
        if self.http is not None:
            self.http.stop()
            self.http = None
        self.runner.close()


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM/SIGINT ask for a drain; a second one exits at once without committing more."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("second %s: exiting without finishing the drain", signal.Signals(signum).name)
            raise SystemExit(1)
        log.info("%s received: draining", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
