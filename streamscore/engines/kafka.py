"""confluent-kafka (librdkafka) source and sink.

The clients are created in ``subscribe``/``start``, never in constructors, so building a pipeline
touches no network. Settings that carry the delivery guarantee are forced and cannot be
overridden by the passthrough maps.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient

from streamscore.config import KafkaSettings
from streamscore.engines.base import DeliveryCallback, PartitionsCallback, TopicPartition
from streamscore.errors import BrokerError, ConfigError, DeliveryError, TransactionAborted
from streamscore.records import Headers, SourceMessage

log = logging.getLogger(__name__)
_librdkafka_log = logging.getLogger("streamscore.librdkafka")

_CONSUMER_FORCED: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
}
_PRODUCER_FORCED: dict[str, Any] = {"enable.idempotence": True, "acks": "all"}
_TRANSACTION_RETRIES = 3
"""Attempts of a transactional call that librdkafka reports as retriable (a timeout, say)."""


def _merge(section: str, base: dict[str, Any], extra: Mapping[str, Any], forced: Mapping[str, Any]) -> dict[str, Any]:
    conf = {**base, **extra}
    for key, value in forced.items():
        given = conf.get(key, value)
        if str(given).lower() not in (str(value).lower(), "-1" if value == "all" else str(value).lower()):
            raise ConfigError(f"kafka.{section}.{key}: streamscore requires {value!r} for its delivery guarantee (got {given!r})")
        conf[key] = value
    return conf


def consumer_config(settings: KafkaSettings) -> dict[str, Any]:
    base = {
        "bootstrap.servers": settings.bootstrap_servers,
        "group.id": settings.group_id,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.session_timeout_ms // 5),
        **settings.client,
    }
    return _merge("consumer", base, settings.consumer, _CONSUMER_FORCED)


def producer_config(settings: KafkaSettings, queue_messages: int, max_message_bytes: int,
                    transactional_id: str | None = None) -> dict[str, Any]:
    base: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "linger.ms": 5,
        "compression.type": "lz4",
        "queue.buffering.max.messages": queue_messages,
        "message.max.bytes": max(1_000_000, max_message_bytes + 65_536),
        **settings.client,
    }
    forced = dict(_PRODUCER_FORCED)
    if transactional_id is not None:
        forced["transactional.id"] = transactional_id
    elif "transactional.id" in {**settings.client, **settings.producer}:
        raise ConfigError("kafka.producer.transactional.id: set 'delivery: exactly_once' (and optionally "
                          "kafka.transactional_id) instead; a bare transactional producer would reject every write")
    return _merge("producer", base, settings.producer, forced)


def check_broker(settings: KafkaSettings, timeout: float) -> set[str]:
    """The topic names on the cluster; raises BrokerError when no broker answers in time, naming the
    last connection error (refused, TLS handshake, authentication) when librdkafka reported one."""
    # librdkafka's own connection-refused lines would bury the one-line answer: keep it quiet
    errors: list[KafkaError] = []
    conf: dict[str, Any] = {"bootstrap.servers": settings.bootstrap_servers, **settings.client, "log_level": 2,
                            "logger": _librdkafka_log, "error_cb": errors.append}
    try:
        admin = AdminClient(conf)
    except KafkaException as exc:  # a setting librdkafka refuses (a key it cannot read ...)
        raise ConfigError(f"kafka.client: {exc.args[0].str() if exc.args else exc}") from None
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        code = err.code() if isinstance(err, KafkaError) else None
        admin.poll(0)  # serves the queued error callbacks
        causes = [e.str() for e in errors if e.code() != KafkaError._ALL_BROKERS_DOWN]
        cause = f" ({causes[-1]})" if causes else ""
        raise BrokerError(
            f"kafka.bootstrap_servers: no broker reachable at {settings.bootstrap_servers} within {timeout:g}s{cause}",
            code,
        ) from None
    return set(metadata.topics)


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


class KafkaSource:
    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._consumer: Consumer | None = None
        self._errors = _ErrorLatch("consumer")

    def subscribe(self, on_assign: PartitionsCallback, on_revoke: PartitionsCallback,
                  on_lost: PartitionsCallback) -> None:
        conf = consumer_config(self.settings)
        conf["error_cb"] = self._errors
        conf["on_commit"] = _log_commit
        conf["logger"] = _librdkafka_log
        self._consumer = Consumer(conf)

        def adapt(callback: PartitionsCallback) -> Any:
            return lambda _consumer, parts: callback([(p.topic, p.partition) for p in parts])

        self._consumer.subscribe(
            list(self.settings.source_topics),
            on_assign=adapt(on_assign), on_revoke=adapt(on_revoke), on_lost=adapt(on_lost),
        )

    def poll(self, max_messages: int, timeout: float) -> Sequence[SourceMessage]:
        assert self._consumer is not None, "subscribe() first"
        try:
            messages = self._consumer.consume(max_messages, timeout)
        except KafkaException as exc:
            err = exc.args[0]
            raise BrokerError(f"consumer failed: {err.str()}", err.code()) from None
        self._errors.raise_if_fatal()
        if any(m.error() is not None for m in messages):
            messages = [m for m in messages if not _consume_error(m)]
        return cast("Sequence[SourceMessage]", messages)

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
        for over 60 s); it runs on a helper thread so that shutdown stays bounded."""
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

    def start(self) -> None:
        conf = producer_config(self.settings, self._queue_messages, self._max_message_bytes, self._transactional_id)
        conf["error_cb"] = self._errors
        conf["logger"] = _librdkafka_log
        self._producer = Producer(conf)
        if self._transactional_id is not None:
            # fences any earlier producer with this id and aborts the transaction it left open
            self._transact("initialising transactions", self._producer.init_transactions, self._timeout)

    # -- transactions (exactly-once only) ---------------------------------------------------

    def begin_transaction(self) -> None:
        assert self._producer is not None
        self._transact("beginning a transaction", self._producer.begin_transaction)

    def commit_transaction(self, positions: Mapping[TopicPartition, int], group_metadata: object) -> None:
        """Add the consumed positions to the open transaction and commit it, outputs and offsets at once."""
        producer = self._producer
        assert producer is not None
        offsets = [KafkaTopicPartition(t, p, o) for (t, p), o in positions.items()]
        if offsets:
            self._transact("adding offsets to the transaction", producer.send_offsets_to_transaction,
                           offsets, group_metadata, self._timeout)
        self._transact("committing the transaction", producer.commit_transaction, self._timeout)

    def abort_transaction(self) -> None:
        assert self._producer is not None
        self._transact("aborting the transaction", self._producer.abort_transaction, self._timeout)

    def _transact(self, what: str, call: Any, *args: Any) -> None:
        """Run a transactional call: retry what librdkafka says to retry, sort the rest into
        abortable (TransactionAborted) and fatal (DeliveryError)."""
        for attempt in range(_TRANSACTION_RETRIES):
            try:
                call(*args)
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.txn_requires_abort():
                    raise TransactionAborted(f"{what}: {err.str()}", err.code()) from None
                if err.retriable() and attempt + 1 < _TRANSACTION_RETRIES:
                    log.warning("%s: %s (retrying)", what, err.str())
                    continue
                raise DeliveryError(f"{what} failed: {err.str()}", err.code()) from None

    def produce(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None,
                on_delivery: DeliveryCallback) -> None:
        producer = self._producer
        assert producer is not None, "start() first"
        while True:
            try:
                producer.produce(topic, value, key, headers=cast(Any, headers), on_delivery=on_delivery)
                return
            except BufferError:  # local queue full: serve deliveries, then retry
                producer.poll(0.05)
                self._errors.raise_if_fatal()
            except KafkaException as exc:  # rejected locally (too large, ...): fail this record
                on_delivery(exc.args[0], None)
                return

    def produce_many(self, topic: str, records: Iterable[tuple[bytes | None, bytes]],
                     on_delivery: DeliveryCallback) -> None:
        producer = self._producer
        assert producer is not None, "start() first"
        produce = producer.produce
        for key, value in records:
            try:
                produce(topic, value, key, on_delivery=on_delivery)
            except (BufferError, KafkaException):  # queue full or rejected locally: the careful path
                self.produce(topic, key, value, None, on_delivery)

    def poll(self, timeout: float) -> None:
        assert self._producer is not None
        self._producer.poll(timeout)
        self._errors.raise_if_fatal()

    def flush(self, timeout: float) -> int:
        assert self._producer is not None
        remaining = self._producer.flush(timeout)
        self._errors.raise_if_fatal()
        return remaining

    def close(self) -> None:
        self._producer = None


def create_topics(bootstrap_servers: str, topics: Mapping[str, int], client: Mapping[str, Any] | None = None,
                  timeout: float = 15.0, config: Mapping[str, str] | None = None) -> None:
    """Create topics (name -> partitions) that do not exist yet, with topic ``config`` if given."""
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap_servers, **(client or {})})
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [NewTopic(name, partitions, 1, config=dict(config or {}))
              for name, partitions in topics.items() if name not in existing]
    if not wanted:
        return
    for name, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerError(f"cannot create topic {name!r}: {err.str()}", err.code()) from None
