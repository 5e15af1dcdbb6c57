"""``engine: faust``: the scoring core inside a Faust (faust-streaming) application.

One agent on the source topics takes events in count/time windows (``Stream.take_events``: up to
``batching.max_batch_size`` events, or what arrived within ``batching.max_wait_ms``), scores each
window with one ``Scorer.score`` call, and writes the score records and dead letters through Faust's
producer. Stateful features are kept in a Faust table (changelog-backed; RocksDB or memory).

Delivery (at least once): a window's events are acknowledged to Faust only once every output, every
dead letter and every changelog write of the window is acknowledged by the broker; Faust commits
acknowledged offsets only (every ``batching.commit_interval_ms``). ``take_events`` acknowledges a
window in a ``finally`` clause, even one whose processing raised, so any failure inside a window
ends the process at once (exit 1), before Faust could commit it. Not an output refused for its size
alone (``faust_oversize``): its input is dead-lettered (``output_too_large``) within the window.

Exactly once (``delivery: exactly_once``): Faust's ``processing_guarantee: exactly_once``, with one
Kafka transaction per source partition (Faust's transactional producers, ``<group_id>-<topic
group>-<partition>``) that commits the partition's offsets. Faust itself would send a record in the
transaction of the partition the record goes to, and only to topics the application consumes; the
engine sends each output and dead letter in the transaction of its event's source partition instead,
so any output topic works, whatever its partition count, and commits only between windows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust
import numpy as np
from faust.types import TP

from streamscore.config import Settings
from streamscore.core.model import ModelRunner
from streamscore.core.records import Headers, Reason, Rejection, ScoredBatch
from streamscore.core.render import DEAD_LETTER_SAMPLE_BYTES, dead_letter
from streamscore.core.scorer import Scorer, ScoringSpec
from streamscore.core.velocity import VelocityFeatures
from streamscore.engines.faust_oversize import Output, Oversize, refused_before_sending, send_alone
from streamscore.engines.faust_state import FaustMessage, TableStore, store_url
from streamscore.engines.faust_worker import App, Worker, quiet_faust_logs
from streamscore.engines.kafka_admin import check_broker, partition_counts
from streamscore.errors import BrokerError, ConfigError, ModelUnavailable, OutputTooLarge
from streamscore.metrics import Metrics, Totals
from streamscore.server import Health

log = logging.getLogger(__name__)

EXIT_FAILURE = 1
NEVER = 10.0 ** 9
"""Faust's own commit triggers are pushed out of the way: the engine commits on its own timer."""
TABLE = "velocity"
"""The table of stateful features (its changelog topic: ``<group_id>-velocity-changelog``)."""


class FaustEngine:
    """Builds and runs the Faust application; ``check`` and ``run_stream`` are what the service calls."""

    def __init__(self, settings: Settings, transactional_id: str | None = None) -> None:
        self.settings = settings
        check_settings(settings)
        self.fetch_wait_ms = int(settings.kafka.consumer.get("fetch.wait.max.ms", 500))
        self.partitions: int | None = None
        self.totals = Totals(decisions=dict.fromkeys([settings.decisions.default,
                                                      *(r.label for r in settings.decisions.rules)], 0))
        self.assigned = 0

    def check(self, timeout: float) -> None:
        """The cluster answers, the output topics exist and the source topics agree on their partition count
        (the table of stateful features is partitioned like them)."""
        kafka = self.settings.kafka
        topics = check_broker(kafka, timeout)
        for key, name in output_topics(self.settings).items():
            if name not in topics:
                raise BrokerError(f"{key}: topic {name!r} does not exist on {kafka.bootstrap_servers}")
        missing = [t for t in kafka.source_topics if t not in topics]
        if missing:
            raise BrokerError(f"kafka.source_topics: {missing} do not exist on {kafka.bootstrap_servers} "
                              f"(engine faust sizes its table by them)")
        counts = set(partition_counts(kafka, kafka.source_topics, timeout).values())
        if len(counts) != 1:
            raise ConfigError(f"kafka.source_topics: engine faust needs source topics with one partition count, "
                              f"got {sorted(counts)}")
        self.partitions = counts.pop()

    def run_stream(self, spec: ScoringSpec, runner: ModelRunner, metrics: Metrics, health: Health,
                   stop: threading.Event) -> bool:
        """Run the Faust worker until ``stop``; True when the last window was finished and committed."""
        if self.partitions is None:
            self.check(10.0)
        quiet_faust_logs()
        app = App(self.settings.kafka.group_id, **app_options(self.settings, self.partitions or 1))
        app.fetch_wait_ms = self.fetch_wait_ms
        agent = ScoringAgent(app, self.settings, spec, runner, metrics, health, stop, self)
        worker = Worker(app, stop, loglevel=None, quiet=True, override_logging=False, redirect_stdouts=False)
        agent.worker = worker
        try:
            worker.execute_from_commandline()
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                return False
        return agent.drained


def check_settings(settings: Settings) -> None:
    """What the Faust engine cannot do, refused before anything starts (ConfigError naming the key)."""
    kafka = settings.kafka
    if kafka.client:
        raise ConfigError(f"kafka.client: engine faust takes no librdkafka settings (its clients are aiokafka's); "
                          f"got {sorted(kafka.client)}")
    extra = sorted(set(kafka.consumer) - {"fetch.wait.max.ms"})
    if extra:
        raise ConfigError(f"kafka.consumer.{extra[0]}: engine faust reads only fetch.wait.max.ms here")
    if kafka.producer:
        raise ConfigError(f"kafka.producer.{sorted(kafka.producer)[0]}: engine faust takes no producer settings")
    for i, d in enumerate(settings.outputs):
        if d.kind != "kafka" or d.options:
            raise ConfigError(f"destinations[{i}].kind: engine faust writes to kafka topics only (got {d.kind!r})")
    if settings.delivery == "exactly_once" and kafka.transactional_id:
        raise ConfigError("kafka.transactional_id: engine faust names its transactional ids itself, one per "
                          "source partition (<group_id>-<topic group>-<partition>); leave it unset")


def output_topics(settings: Settings) -> dict[str, str]:
    """Settings key -> topic, for every topic the engine writes."""
    kafka = settings.kafka
    wanted = {"kafka.dead_letter_topic": kafka.dead_letter_topic}
    for i, destination in enumerate(settings.outputs):
        key = f"destinations[{i}].topic" if destination.topic else "kafka.destination_topic"
        wanted[key] = destination.topic or kafka.destination_topic
    return wanted


def app_options(settings: Settings, partitions: int) -> dict[str, Any]:
    """faust.App settings from streamscore's."""
    kafka, batching = settings.kafka, settings.batching
    session = kafka.session_timeout_ms / 1000.0
    return {
        "broker": [f"kafka://{server.strip()}" for server in kafka.bootstrap_servers.split(",")],
        "store": store_url(settings.faust.store),
        "datadir": str(Path(settings.faust.data_dir).absolute()),
        "web_enabled": False,
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": session,
        "broker_heartbeat_interval": min(3.0, session / 3),
        "broker_rebalance_timeout": max(session, 10.0),
        "broker_commit_interval": NEVER,
        "broker_commit_every": 10 ** 9,
        "topic_disable_leader": True,
        "topic_partitions": partitions,
        "topic_replication_factor": settings.faust.topic_replication,
        # Faust's transactions need its own partition assignor (its topic groups name the transactional
        # ids); Faust picks it only for an application with tables or standby replicas, so exactly-once
        # without stateful features asks for one standby (of no table: it changes nothing else)
        "table_standby_replicas": int(settings.delivery == "exactly_once" and not settings.stateful_features),
        "key_serializer": "raw",
        "value_serializer": "raw",
        "producer_acks": -1,
        "processing_guarantee": settings.delivery,
        "stream_buffer_maxsize": max(4096, batching.max_batch_size * 2),
    }


class ScoringAgent:
    """The agent, the commit timer and the stopper of one Faust application."""

    def __init__(self, app: faust.App, settings: Settings, spec: ScoringSpec, runner: ModelRunner,
                 metrics: Metrics, health: Health, stop: threading.Event, engine: FaustEngine) -> None:
        self.app, self.settings, self.metrics, self.health, self.stop = app, settings, metrics, health, stop
        self.engine = engine
        self.worker: Worker | None = None
        self.drained = False
        self.busy = asyncio.Lock()
        self.uncommitted = 0
        """Events consumed whose offsets are not yet committed (the window in hand included)."""
        self.acked = 0
        """Events acknowledged to Faust since the last commit."""
        self.acked_to: dict[tuple[str, int], int] = {}
        """Per source partition, one past the last event acknowledged to Faust."""
        self.restart_at: dict[tuple[str, int], int] = {}
        """Per source partition, where the group would resume: the last committed position, or the first
        offset consumed since assignment (the base of the lag metric, as the confluent-kafka engine's)."""
        self.exactly_once = settings.delivery == "exactly_once"
        self.oversize = Oversize(lambda output: send_alone(app, output), self.exactly_once)
        kafka = settings.kafka
        self.source = app.topic(*kafka.source_topics, key_type=bytes, value_type=bytes)
        self.outputs = [app.topic(name, key_type=bytes, value_type=bytes)
                        for key, name in output_topics(settings).items() if key != "kafka.dead_letter_topic"]
        self.dead_letters = app.topic(kafka.dead_letter_topic, key_type=bytes, value_type=bytes)
        stateful = settings.stateful_features
        self.store: TableStore | None = None
        state = None
        if stateful:
            table = app.Table(TABLE, default=None, key_type=str, value_type=None)  # json keys and values
            self.store = TableStore(table)
            state = VelocityFeatures(stateful, self.store, settings.faust.history_grace_s)
        self.scorer = Scorer(spec, runner, state=state)
        self.labels = self.scorer.policy.labels
        b = settings.batching
        app.agent(self.source, name="score")(self._agent)
        app.timer(b.commit_interval_ms / 1000.0, name="commit")(self._tick)
        app.task(self._stopper)

    async def _agent(self, stream: faust.types.StreamT[Any]) -> None:
        assert isinstance(stream, faust.Stream)  # take_events is the Stream class's, not the protocol's
        b = self.settings.batching
        if self.store is not None:
            self.store.stream = stream
        async for events in stream.take_events(b.max_batch_size, within=b.max_wait_ms / 1000.0):
            async with self.busy:
                try:
                    await self._window(stream, events)
                except BaseException as exc:  # noqa: BLE001 - take_events would ack the window in its finally
                    _exit_now(exc)

    async def _window(self, stream: faust.Stream[Any], events: Sequence[Any]) -> None:
        messages = [FaustMessage(e) for e in events]
        for msg in messages:  # the first event since assignment: where the group would resume until a commit
            self.restart_at.setdefault((msg.message.topic, msg.message.partition), msg.message.offset)
        self.uncommitted += len(messages)
        self.metrics.uncommitted.set(self.uncommitted)
        result = await self._score(messages)
        outputs: list[Output] = []
        sent = []
        for row, record in zip(result.scored, result.outputs, strict=True):
            msg = messages[row]
            for topic in self.outputs:
                output = Output(int(row), topic.get_topic_name(), msg.key(), record)
                outputs.append(output)
                try:
                    sent.append(await self._send(msg, topic, output.key, record))
                except Exception as exc:  # noqa: BLE001 - refused_before_sending raises all but a size refusal
                    sent.append(refused_before_sending(output, exc))
        pending = []
        for rejection in result.rejections:
            msg = messages[rejection.index]
            letter = self.scorer.dead_letter(msg, rejection, msg.headers() or [])
            pending.append(await self._send(msg, self.dead_letters, letter.key, letter.value,
                                            _headers(letter.headers)))
        if self.store is not None:
            pending.extend(self.store.take_pending())
        self.metrics.in_flight.set(len(pending) + len(sent))
        acks = await asyncio.gather(*sent, return_exceptions=True)
        await asyncio.gather(*pending)  # a refused record raises: the process exits, nothing committed
        refused = await self.oversize.refused(outputs, acks)  # raises on any other refusal, as above
        if refused:
            await self._dead_letter_refused(messages, refused)
        self.metrics.in_flight.set(0)
        self._count(messages, result)
        self._move_refused(len(refused))
        for event in events:
            await stream.ack(event)
        self.acked += len(events)
        for msg in messages:  # events of a partition arrive in offset order
            self.acked_to[(msg.message.topic, msg.message.partition)] = msg.message.offset + 1

    async def _dead_letter_refused(self, messages: Sequence[FaustMessage], refused: dict[int, OutputTooLarge]) -> None:
        """Each input whose output was refused for its size alone, dead-lettered (``output_too_large``),
        its value cut to 1 KiB like an oversize input's (the dead-letter topic would refuse it whole too);
        acknowledged before the window is."""
        pending = []
        now_ms = int(time.time() * 1000)
        for row, error in sorted(refused.items()):
            msg = messages[row]
            log.warning("an output to %s (%d bytes) was refused as too large: dead-lettering %s[%s]@%s",
                        error.where, len(error.value or b""), msg.topic(), msg.partition(), msg.offset())
            letter = dead_letter(msg, Rejection(row, Reason.OUTPUT_TOO_LARGE, error.detail()), msg.headers() or [],
                                 DEAD_LETTER_SAMPLE_BYTES, now_ms)
            pending.append(await self._send(msg, self.dead_letters, letter.key, letter.value,
                                            _headers(letter.headers)))
        await asyncio.gather(*pending)

    def _move_refused(self, count: int) -> None:
        """Inputs dead-lettered for an output too large: counted scored with their window, the totals
        move them (consumed = scored + dead-lettered); the metrics' counters cannot, so there they
        count as scored and dead-lettered, as under the confluent-kafka engine."""
        if count:
            self.metrics.dead_lettered.labels(str(Reason.OUTPUT_TOO_LARGE)).inc(count)
            self.engine.totals.scored -= count
            self.engine.totals.dead_lettered += count

    async def _send(self, msg: FaustMessage, topic: faust.types.TopicT, key: bytes | None, value: bytes | None,
                    headers: list[tuple[str, bytes]] | None = None) -> Any:
        """Send one record through Faust's producer; the future of its acknowledgement (aiokafka's:
        ``topic.send`` would also fail a FutureMessage nobody awaits when the broker refuses the record,
        and asyncio logs that as an error). Exactly-once: in the transaction of the event's source
        partition, which commits that partition's offsets (Faust's own routing picks the transaction of
        the partition a record goes to, and only for the topics the application consumes: not the
        score and dead-letter topics)."""
        tid = None
        if self.exactly_once:
            source, partition = msg.message.topic, msg.message.partition
            tid = f"{self.app.conf.id}-{self.app.assignor.group_for_topic(source)}-{partition}"
        return await self.app.producer.send(topic.get_topic_name(), key, value, None, None, headers,
                                            transactional_id=tid)

    async def _score(self, messages: Sequence[FaustMessage]) -> ScoredBatch:
        """The window scored; while the model itself fails, retried with backoff (not ready meanwhile),
        up to ``breaker.max_outage_s``, then ModelUnavailable ends the process."""
        breaker = self.settings.breaker
        backoff, down_since = breaker.initial_backoff_s, None
        while True:
            try:
                result = self.scorer.score(messages)
            except ModelUnavailable as exc:
                now = time.monotonic()
                down_since = down_since or now
                self.metrics.model_failures.inc()
                self.metrics.breaker_open.set(1)
                self.health.ready = False
                if now - down_since > breaker.max_outage_s:
                    raise
                log.warning("model down (%s); retrying the window in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, breaker.max_backoff_s)
                continue
            if down_since is not None:
                self.metrics.breaker_open.set(0)
                self.health.ready = True
            return result

    def _count(self, messages: Sequence[FaustMessage], result: ScoredBatch) -> None:
        counts = self.metrics.count_batch(len(messages), result, self.labels)
        self.engine.totals.add(len(messages), result, self.labels, counts)
        now_ms = time.time() * 1000.0
        times = np.array([messages[row].timestamp()[1] for row in result.scored] +
                         [messages[r.index].timestamp()[1] for r in result.rejections], dtype=np.float64)
        if times.size:
            self.metrics.end_to_end.observe_many((now_ms - times[times > 0]) / 1000.0)

    async def _tick(self) -> None:
        """The commit timer. Exactly-once: between windows, so that a transaction holds only outputs
        whose events' offsets it commits (a window's sends would otherwise straddle the commit)."""
        if not self.exactly_once:
            await self._commit()
            return
        async with self.busy:
            await self._commit_or_exit()

    async def _commit_or_exit(self) -> None:
        """Exactly-once: a transaction that failed to commit ends the process (the restart redoes it)."""
        try:
            await self._commit()
        except Exception as exc:  # noqa: BLE001 - one line and exit 1, whatever failed
            _exit_now(exc, "a transaction failed to commit; exiting, a restart redoes it")

    async def _commit(self) -> bool:
        """Commit what was acknowledged (Faust commits acknowledged offsets only, up to the first gap)."""
        self.health.beat()
        done, acked_to = self.acked, dict(self.acked_to)
        committed = await self.app.consumer.commit()
        self.acked -= done
        self.uncommitted -= done
        self.metrics.uncommitted.set(self.uncommitted)
        if committed:
            self.metrics.commits.inc()
            self.restart_at.update(acked_to)
        sources = set(self.settings.kafka.source_topics)
        assigned = {(tp.topic, tp.partition) for tp in self.app.consumer.assignment() if tp.topic in sources}
        self.engine.assigned = len(assigned)
        self.metrics.assigned_partitions.set(self.engine.assigned)
        self._report_lag(assigned)
        return bool(committed)

    def _report_lag(self, assigned: set[tuple[str, int]]) -> None:
        """``streamscore_consumer_lag`` as the confluent-kafka engine reports it: the high watermark from
        the last fetch minus the position the group would resume from, per partition that delivered an
        event since assignment; the series of partitions no longer assigned are dropped."""
        for tp in self.restart_at.keys() - assigned:
            del self.restart_at[tp]
            self.acked_to.pop(tp, None)
            self.metrics.forget_partition(*tp)
        for (topic, partition), restart in self.restart_at.items():
            high = self.app.consumer.highwater(TP(topic, partition))
            if high is not None and high >= 0:
                self.metrics.consumer_lag.labels(topic, str(partition)).set(max(0, high - restart))

    async def _stopper(self) -> None:
        """Ready once started; on ``stop``: finish the window in hand, commit, stop the worker."""
        self.health.ready = True
        while not self.stop.is_set():
            self.health.beat()
            await asyncio.sleep(0.05)
        self.health.ready = False
        log.info("stopping: finishing the window in hand, then committing")
        try:
            await asyncio.wait_for(self.busy.acquire(), self.settings.batching.drain_timeout_s)
            self.drained = True
        except TimeoutError:
            log.error("drain timed out; the window in hand stays uncommitted")
        if not self.exactly_once:
            await self._commit()
        elif self.drained:  # a transaction may hold part of the window in hand: never commit it
            await self._commit_or_exit()
        self.oversize.close()
        assert self.worker is not None
        self.worker.shut_down()


def _exit_now(exc: BaseException, why: str = "a window failed; exiting before Faust can commit it") -> None:
    """End the process at once (exit 1) with one line saying why: nothing of the window is committed."""
    log.critical("%s: %s: %s", why, type(exc).__name__, exc)
    log.debug("the failure", exc_info=exc)
    sys.stderr.write(f"streamscore: error: {type(exc).__name__}: {exc}\n")
    logging.shutdown()
    sys.stderr.flush()
    os._exit(EXIT_FAILURE)


def _headers(headers: Headers) -> list[tuple[str, bytes]]:
    return [(name, value or b"") for name, value in headers]
