"""confluent-kafka (librdkafka) source and sink.

The clients are created in ``subscribe``/``start``, never in constructors, so building a pipeline
touches no network. Settings that carry the delivery guarantee are forced and cannot be
overridden by the passthrough maps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import methodcaller
from typing import Any, cast

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streamscore.config import KafkaSettings, Settings
from streamscore.config.kafka import CONSUMER_FORCED, PRODUCER_FORCED
from streamscore.core.records import UNREADABLE_HEADERS, DeadLetter, Headers, SourceMessage, TopicPartition
from streamscore.engines import base
from streamscore.engines.base import DeliveryCallback, PartitionsCallback
from streamscore.engines.kafka_admin import check_broker
from streamscore.engines.kafka_oversize import Oversize, Unsent
from streamscore.engines.kafka_oversize import reporting as _reporting
from streamscore.errors import BrokerError, DeliveryError, TransactionAborted

log = logging.getLogger(__name__)
_librdkafka_log = logging.getLogger("streamscore.librdkafka")

_TRANSACTION_RETRIES = 3
"""Attempts of a transactional call that librdkafka reports as retriable (a timeout, say)."""
_error = methodcaller("error")


def _merge(base: dict[str, Any], extra: Mapping[str, Any], forced: Mapping[str, Any]) -> dict[str, Any]:
    """The passthrough map over the defaults, then the forced settings (the settings validators
    refuse a passthrough value that contradicts one)."""
    return {**base, **extra, **forced}


REBOOTSTRAP_AFTER_MS = 10_000
"""librdkafka's ``metadata.recovery.rebootstrap.trigger.ms`` for both clients (its default is 5
minutes). A broker briefly fenced by its controller (a pause longer than its session) is left out
of the metadata the broker itself answers; librdkafka then drops it, and with it the group
coordinator, and a client of a one-broker cluster has no broker left to ask until it bootstraps
again: the consumer sat without partitions for the whole 5 minutes."""


def consumer_config(settings: KafkaSettings) -> dict[str, Any]:
    base = {
        "bootstrap.servers": settings.bootstrap_servers,
        "metadata.recovery.rebootstrap.trigger.ms": REBOOTSTRAP_AFTER_MS,
        "group.id": settings.group_id,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.session_timeout_ms // 5),
        **settings.client,
    }
    return _merge(base, settings.consumer, CONSUMER_FORCED)


LINGER_MS = 1
"""The producer's default ``linger.ms`` (librdkafka's is 5): the pipeline hands a whole scored
batch to the producer at once, so waiting for more records to join adds latency and little
batching (5 ms was most of the time from scoring to the broker's append on Apache Kafka)."""


def producer_config(settings: KafkaSettings, queue_messages: int, max_message_bytes: int,
                    transactional_id: str | None = None) -> dict[str, Any]:
    base: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "metadata.recovery.rebootstrap.trigger.ms": REBOOTSTRAP_AFTER_MS,
        "linger.ms": LINGER_MS,
        "compression.type": "lz4",
        "queue.buffering.max.messages": queue_messages,
        "message.max.bytes": max(1_000_000, max_message_bytes + 65_536),
        **settings.client,
    }
    forced = dict(PRODUCER_FORCED)
    if transactional_id is not None:
        forced["transactional.id"] = transactional_id
    return _merge(base, settings.producer, forced)


class _ErrorLatch:
    """librdkafka's error callback, run on its threads: log, and keep the first fatal error."""

    def __init__(self, client: str) -> None:
        self.client = client
        self.fatal: KafkaError | None = None
        self._lock = threading.Lock()

    def __call__(self, err: KafkaError) -> None:
        if err.fatal():
            with self._lock:
                self.fatal = self.fatal or err
            log.error("%s fatal error: %s", self.client, err)
        else:
            log.warning("%s: %s", self.client, err)

    def raise_if_fatal(self) -> None:
        if self.fatal is not None:
            raise DeliveryError(f"{self.client} fatal error: {self.fatal.str()}", self.fatal.code())


GROUP_STUCK_AFTER_MS = 30_000
"""A consumer whose group has not been ``up`` (it is looking for its coordinator, or waiting for a
broker) for this long is replaced by a new client. librdkafka was seen to stay in ``query-coord``
for minutes with no broker left to ask after a one-broker cluster fenced its broker for a moment,
even with ``metadata.recovery.rebootstrap.trigger.ms`` set; a new client bootstraps again."""
STATS_INTERVAL_MS = 5_000
"""How often librdkafka reports the group's state to the watch (``statistics.interval.ms``)."""


class _GroupWatch:
    """librdkafka's statistics callback, run inside ``consume``: notes a group stuck outside ``up``."""

    def __init__(self, limit_ms: int) -> None:
        self.limit_ms = limit_ms
        self.stuck: str | None = None

    def __call__(self, stats: str) -> None:
        group = orjson.loads(stats).get("cgrp") or {}
        state, age = group.get("state", "up"), int(group.get("stateage", 0))
        if state not in ("up", "init", "term") and age >= self.limit_ms:
            self.stuck = f"the consumer group has been in state {state} for {age / 1000:.0f}s"


class KafkaSource:
    def __init__(self, settings: KafkaSettings, client: Callable[[dict[str, Any]], Consumer] = Consumer,
                 stuck_after_ms: int = GROUP_STUCK_AFTER_MS) -> None:
        self.settings = settings
        self._client = client
        self._stuck_after_ms = stuck_after_ms
        self._consumer: Consumer | None = None
        self._errors = _ErrorLatch("consumer")
        self._watch = _GroupWatch(stuck_after_ms)
        self._callbacks: tuple[PartitionsCallback, PartitionsCallback, PartitionsCallback] | None = None
        self._generation = 0
        """Bumped when a client is replaced: the rebalance callbacks of an older one are ignored."""

    def subscribe(self, on_assign: PartitionsCallback, on_revoke: PartitionsCallback,
                  on_lost: PartitionsCallback) -> None:
        self._callbacks = (on_assign, on_revoke, on_lost)
        self._connect()

    def _connect(self) -> None:
        assert self._callbacks is not None
        conf = consumer_config(self.settings)
        conf["error_cb"] = self._errors
        conf["on_commit"] = _log_commit
        conf["logger"] = _librdkafka_log
        conf.setdefault("statistics.interval.ms", STATS_INTERVAL_MS)
        self._watch = _GroupWatch(self._stuck_after_ms)
        conf["stats_cb"] = self._watch
        self._consumer = consumer = self._client(conf)
        generation = self._generation

        def adapt(callback: PartitionsCallback) -> Any:
            def call(_consumer: Any, parts: list[KafkaTopicPartition]) -> None:
                if generation == self._generation:  # a replaced client's callbacks (in its close) are not ours
                    callback([(p.topic, p.partition) for p in parts])
            return call

        on_assign, on_revoke, on_lost = self._callbacks
        consumer.subscribe(
            list(self.settings.source_topics),
            on_assign=adapt(on_assign), on_revoke=adapt(on_revoke), on_lost=adapt(on_lost),
        )

    def _replace(self, why: str) -> None:
        """A new client for a stuck one: what the old one owned counts as lost (its uncommitted work
        is redone), and it leaves on a thread of its own, abandoned if it never does."""
        old = self._consumer
        assert old is not None and self._callbacks is not None
        try:
            owned = [(p.topic, p.partition) for p in old.assignment()]
        except KafkaException:
            owned = []
        log.warning("consumer: %s; replacing it with a new client%s", why,
                    f" ({len(owned)} partitions it owned count as lost)" if owned else "")
        self._generation += 1
        if owned:
            self._callbacks[2](owned)
        threading.Thread(target=old.close, name="consumer-close", daemon=True).start()
        self._connect()

    def poll(self, max_messages: int, timeout: float) -> Sequence[SourceMessage]:
        assert self._consumer is not None, "subscribe() first"
        if self._watch.stuck is not None:
            self._replace(self._watch.stuck)
        try:
            messages = self._consumer.consume(max_messages, timeout)
        except KafkaException as exc:
            err = exc.args[0]
            raise BrokerError(f"consumer failed: {err.str()}", err.code()) from None
        self._errors.raise_if_fatal()
        if list(map(_error, messages)).count(None) != len(messages):  # C-level: no bytecode per message
            messages = [m for m in messages if not _consume_error(m)]
        return cast("Sequence[SourceMessage]", messages)

    def headers(self, message: SourceMessage) -> Headers:
        try:
            return list(message.headers() or [])
        except (UnicodeDecodeError, SystemError):
            # confluent-kafka cannot decode a header name that is not UTF-8: it raises UnicodeDecodeError,
            # or SystemError when a later header follows the bad one
            return list(UNREADABLE_HEADERS)

    def pause(self, partitions: list[TopicPartition]) -> None:
        if self._consumer is not None and partitions:
            self._consumer.pause([KafkaTopicPartition(t, p) for t, p in partitions])

    def resume(self, partitions: list[TopicPartition]) -> None:
        if self._consumer is not None and partitions:
            self._consumer.resume([KafkaTopicPartition(t, p) for t, p in partitions])

    def seek(self, positions: Mapping[TopicPartition, int]) -> None:
        assert self._consumer is not None
        for (topic, partition), offset in positions.items():
            try:
                self._consumer.seek(KafkaTopicPartition(topic, partition, offset))
            except KafkaException as exc:
                err = exc.args[0]
                raise BrokerError(f"cannot rewind {topic}[{partition}] to {offset}: {err.str()}", err.code()) from None

    def high_watermarks(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """From the last fetch responses (no request is sent); partitions not fetched yet are left out."""
        assert self._consumer is not None
        marks: dict[TopicPartition, int] = {}
        for topic, partition in partitions:
            try:
                _low, high = self._consumer.get_watermark_offsets(KafkaTopicPartition(topic, partition), cached=True)
            except KafkaException:
                continue
            if high >= 0:
                marks[(topic, partition)] = high
        return marks

    def group_metadata(self) -> object:
        assert self._consumer is not None
        return self._consumer.consumer_group_metadata()

    def commit(self, positions: Mapping[TopicPartition, int], asynchronous: bool) -> None:
        assert self._consumer is not None
        offsets = [KafkaTopicPartition(t, p, o) for (t, p), o in positions.items()]
        try:
            if asynchronous:
                self._consumer.commit(offsets=offsets, asynchronous=True)
                return
            result = self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0]
            raise BrokerError(f"offset commit failed: {err.str()}", err.code()) from None
        for tp in result or []:
            if tp.error is not None:
                raise BrokerError(f"offset commit failed for {tp.topic}[{tp.partition}]: {tp.error.str()}",
                                  tp.error.code())

    def close(self, timeout: float) -> None:
        """``Consumer.close`` has no time limit (a member leaving mid-rebalance was seen waiting in it
        for over 60 s); it runs on a helper thread, abandoned after ``timeout``, so that shutdown
        stays bounded."""
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        closer = threading.Thread(target=consumer.close, name="consumer-close", daemon=True)
        closer.start()
        closer.join(timeout)
        if closer.is_alive():
            log.warning("the consumer did not leave its group within %gs; the group reassigns its partitions "
                        "once the session times out", timeout)


def _consume_error(message: Any) -> bool:
    """True (and logged) if the message is an error event rather than a record."""
    err = message.error()
    if err is None:
        return False
    if err.fatal():
        raise BrokerError(f"consumer fatal error: {err.str()}", err.code())
    log.warning("consumer: %s", err.str())
    return True


def _log_commit(err: KafkaError | None, partitions: list[Any]) -> None:
    if err is not None:
        log.warning("asynchronous commit failed: %s", err.str())
        return
    failed = [p for p in partitions if p.error is not None]
    for p in failed:
        log.warning("commit failed for %s[%d]: %s", p.topic, p.partition, p.error.str())


class KafkaSink:
    """Idempotent producer; with a ``transactional_id``, a transactional one (exactly-once)."""

    def __init__(self, settings: KafkaSettings, queue_messages: int, max_message_bytes: int,
                 transactional_id: str | None = None, transaction_timeout_s: float = 30.0) -> None:
        self.settings = settings
        self._queue_messages = queue_messages
        self._max_message_bytes = max_message_bytes
        self._transactional_id = transactional_id
        self._timeout = transaction_timeout_s
        self._producer: Producer | None = None
        self._errors = _ErrorLatch("producer")
        self._oversize = Oversize(self._alone_producer, transactional_id is not None)
        """The verdict on records the broker refused for size in a batch."""

    def start(self) -> None:
        conf = producer_config(self.settings, self._queue_messages, self._max_message_bytes, self._transactional_id)
        conf["error_cb"] = self._errors
        conf["logger"] = _librdkafka_log
        self._producer = Producer(conf)
        if self._transactional_id is not None:
            # fences any earlier producer with this id and aborts the transaction it left open
            self._transact("initialising transactions", time.monotonic() + self._timeout,
                           self._producer.init_transactions)

    # -- transactions (exactly-once only) ---------------------------------------------------

    def begin_transaction(self) -> None:
        producer = self._producer
        assert producer is not None
        self._transact("beginning a transaction", time.monotonic() + self._timeout,
                       lambda _left: producer.begin_transaction())

    def commit_transaction(self, positions: Mapping[TopicPartition, int], group_metadata: object,
                           timeout: float) -> None:
        """Add the consumed positions to the open transaction and commit it, outputs and offsets at
        once, within ``timeout`` seconds in all."""
        producer = self._producer
        assert producer is not None
        until = time.monotonic() + timeout
        offsets = [KafkaTopicPartition(t, p, o) for (t, p), o in positions.items()]
        if offsets:
            self._transact("adding offsets to the transaction", until,
                           lambda left: producer.send_offsets_to_transaction(offsets, group_metadata, left))
        self._transact("committing the transaction", until, producer.commit_transaction)

    def abort_transaction(self, timeout: float) -> None:
        producer = self._producer
        assert producer is not None
        self._transact("aborting the transaction", time.monotonic() + timeout, producer.abort_transaction)

    def _transact(self, what: str, until: float, call: Callable[[float], object]) -> None:
        """Run a transactional call with what is left of the budget: retry what librdkafka says to
        retry while time is left, sort the rest into abortable (TransactionAborted) and fatal
        (DeliveryError)."""
        for attempt in range(_TRANSACTION_RETRIES):
            left = until - time.monotonic()
            if left <= 0:
                raise TransactionAborted(f"{what}: no time left of the stop or commit budget")
            try:
                call(left)
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.txn_requires_abort():
                    raise TransactionAborted(f"{what}: {err.str()}", err.code()) from None
                if err.retriable() and attempt + 1 < _TRANSACTION_RETRIES and until > time.monotonic():
                    log.warning("%s: %s (retrying)", what, err.str())
                    continue
                raise DeliveryError(f"{what} failed: {err.str()}", err.code()) from None

    def produce(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None,
                on_delivery: DeliveryCallback) -> None:
        self._produce(topic, key, value, headers, _reporting(on_delivery, topic, self._oversize.alone))

    def produce_many(self, topic: str, records: Iterable[tuple[bytes | None, bytes]],
                     on_delivery: DeliveryCallback) -> None:
        producer = self._producer
        assert producer is not None, "start() first"
        produce = producer.produce
        report = _reporting(on_delivery, topic, self._oversize.alone)
        for key, value in records:
            try:
                produce(topic, value, key, on_delivery=report)
            except (BufferError, KafkaException):  # queue full or rejected locally: the careful path
                self._produce(topic, key, value, None, report)

    def _produce(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None,
                 report: Callable[[KafkaError | None, Any], None]) -> None:
        producer = self._producer
        assert producer is not None, "start() first"
        while True:
            try:
                producer.produce(topic, value, key, headers=cast(Any, headers), on_delivery=report)
                return
            except BufferError:  # local queue full: serve deliveries, then retry
                producer.poll(0.05)
                self._errors.raise_if_fatal()
            except KafkaException as exc:  # rejected locally (too large, ...): fail this record
                report(exc.args[0], Unsent(key, value))
                return

    def _alone_producer(self) -> Producer:
        """The second producer ``Oversize`` sends records again with, each in a batch of its own."""
        conf = producer_config(self.settings, self._queue_messages, self._max_message_bytes)
        conf.update({"batch.num.messages": 1, "linger.ms": 0, "error_cb": self._errors, "logger": _librdkafka_log})
        return Producer(conf)

    def poll(self, timeout: float) -> None:
        assert self._producer is not None
        self._producer.poll(timeout)
        self._oversize.poll()
        self._errors.raise_if_fatal()

    def flush(self, timeout: float) -> int:
        assert self._producer is not None
        until = time.monotonic() + timeout
        remaining = self._producer.flush(timeout)
        # after the main producer: its last reports may have sent records again there
        remaining += self._oversize.flush(max(0.0, until - time.monotonic()))
        self._errors.raise_if_fatal()
        return remaining

    def close(self) -> None:
        self._producer = None
        self._oversize.close()


class KafkaDeadLetters:
    """Dead letters to the dead-letter topic, with their headers."""

    def __init__(self, producer: base.Producer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    def write_dead_letters(self, letters: Sequence[DeadLetter], on_delivery: DeliveryCallback) -> None:
        for letter in letters:
            self._producer.produce(self._topic, letter.key, letter.value, letter.headers, on_delivery)

    def poll(self, timeout: float) -> None:
        self._producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        return self._producer.flush(timeout)


class KafkaEngine:
    """The ``confluent-kafka`` engine: a consumer-group source and one idempotent producer for the
    score and dead-letter topics, transactional under ``delivery: exactly_once``."""

    def __init__(self, settings: Settings, transactional_id: str | None) -> None:
        b = settings.batching
        self.settings = settings
        self.source = KafkaSource(settings.kafka)
        queue = max(100_000, b.max_in_flight + 2 * b.max_batch_size)
        self.producer = KafkaSink(settings.kafka, queue, b.max_message_bytes, transactional_id, b.drain_timeout_s)
        self.transactions: KafkaSink | None = self.producer if transactional_id is not None else None
        self.dead_letters = KafkaDeadLetters(self.producer, settings.kafka.dead_letter_topic)

    def check(self, timeout: float) -> None:
        """The broker answers and every topic the service writes exists (BrokerError naming the key)."""
        kafka = self.settings.kafka
        topics = check_broker(kafka, timeout)
        wanted = {"kafka.dead_letter_topic": kafka.dead_letter_topic}
        for i, destination in enumerate(self.settings.outputs):
            if destination.kind == "kafka":
                key = f"destinations[{i}].topic" if destination.topic else "kafka.destination_topic"
                wanted[key] = destination.topic or kafka.destination_topic
        if self.settings.shadow is not None:
            wanted["shadow.topic"] = self.settings.shadow.topic
        for key, name in wanted.items():
            if name not in topics:
                raise BrokerError(f"{key}: topic {name!r} does not exist on {kafka.bootstrap_servers}")
        missing = [t for t in kafka.source_topics if t not in topics]
        if missing:
            log.warning("source topics %s do not exist yet; waiting for them", missing)
