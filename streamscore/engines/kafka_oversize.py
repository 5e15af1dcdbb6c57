"""librdkafka's delivery reports as streamscore's errors, and records refused for their size.

A record larger than its topic's ``max.message.bytes`` is refused by the broker, but the broker
judges whole record batches: every record batched with the large one is refused with it. Only a
verdict on the record alone is an ``OutputTooLarge`` (which the pipeline dead-letters): librdkafka
refused it before sending (over ``message.max.bytes``), or it was sent in a batch of its own.
``Oversize`` obtains that verdict for a record refused in a batch:

- at least once, at once: a second idempotent producer (``batch.num.messages`` 1, made on first
  use) sends it again, alone, to the same partition;
- exactly once, in the redone transaction: the refusal has failed the open transaction, so the
  record is remembered as a suspect and the refusal reported as an ordinary DeliveryError (the
  committer aborts and redoes the transaction). Redone, a suspect is sent alone by the
  transactional producer (flushed before and after). Refused alone, it is too large: that
  transaction fails too, and in the next one the record is reported too large without being sent,
  so its input is dead-lettered in a transaction that commits. Two aborts per large record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Producer

from streamscore.core.records import Headers
from streamscore.engines.base import DeliveryCallback
from streamscore.errors import DeliveryError, OutputTooLarge

log = logging.getLogger(__name__)

SIZE_ERRORS = frozenset({KafkaError.MSG_SIZE_TOO_LARGE})
"""A record larger than the topic's ``max.message.bytes`` (the broker) or ``message.max.bytes``
(librdkafka, before sending): the same code for both."""

Report = Callable[[KafkaError | None, Any], None]
Alone = Callable[[KafkaError, Any, DeliveryCallback], None]


class Unsent:
    """A record librdkafka refused before sending it, as a delivery report's message shows it."""

    __slots__ = ("_key", "_value")

    def __init__(self, key: bytes | None, value: bytes | None) -> None:
        self._key, self._value = key, value

    def partition(self) -> int:
        return -1

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


def reporting(on_delivery: DeliveryCallback, topic: str, alone: Alone | None = None, sent_alone: bool = False
              ) -> Report:
    """librdkafka's delivery report as ``on_delivery(DeliveryError | None)``: one adapter per batch.
    The error names ``topic`` (with the partition when the message has one): the one line an
    operator sees on exit must say where the write failed.

    A size refusal is ``OutputTooLarge`` when it judges the record alone (``Unsent``, or
    ``sent_alone``); otherwise it goes to ``alone(err, msg, on_delivery)`` (``Oversize.alone``), or,
    with no ``alone``, is an ordinary DeliveryError."""

    def report(err: KafkaError | None, msg: Any) -> None:
        if err is None:
            on_delivery(None)
            return
        if err.code() in SIZE_ERRORS and msg is not None:
            if sent_alone or isinstance(msg, Unsent):
                on_delivery(too_large(err, msg, topic))
                return
            if alone is not None:
                alone(err, msg, on_delivery)
                return
        on_delivery(refused(err, msg, topic))

    return report


def _where(topic: str, msg: Any) -> str:
    partition = msg.partition() if msg is not None else None
    return f"{topic}[{partition}]" if isinstance(partition, int) and partition >= 0 else topic


def refused(err: KafkaError, msg: Any, topic: str) -> DeliveryError:
    return DeliveryError(f"an output to {_where(topic, msg)} was not accepted by the broker: {err.str()}", err.code())


def too_large(err: KafkaError, msg: Any, topic: str) -> OutputTooLarge:
    where = _where(topic, msg)
    return OutputTooLarge(f"an output to {where} was not accepted by the broker: {err.str()}", err.code(), where,
                          err.str(), msg.value())


class Oversize:
    """The verdict on records the broker refused for size within a batch (see the module)."""

    def __init__(self, make_producer: Callable[[], Producer], transactional: bool, flush_timeout: float) -> None:
        self._make_producer = make_producer
        self.transactional = transactional
        self._flush_timeout = flush_timeout
        self._alone: Producer | None = None
        self.suspects: set[bytes] = set()
        """Exactly once: records refused in a batch, to be sent alone when their transaction is redone."""
        self.too_large: dict[bytes, KafkaError] = {}
        """Exactly once: records refused alone, reported too large unsent until a transaction commits."""
        self._reported: list[bytes] = []
        self.resent = 0
        """Records sent again alone (logged at close)."""

    @property
    def active(self) -> bool:
        """Exactly once: whether records must be checked one by one (only after a size refusal)."""
        return bool(self.suspects or self.too_large)

    def alone(self, err: KafkaError, msg: Any, on_delivery: DeliveryCallback) -> None:
        """A record refused for size in a batch (runs inside ``poll``/``flush``)."""
        topic, key, value = msg.topic(), msg.key(), msg.value()
        if self.transactional:
            self.suspects.add(value)
            on_delivery(DeliveryError(f"{refused(err, msg, topic)} (redone with that record alone)", err.code()))
            return
        if self._alone is None:
            log.warning("a record batch to %s was refused for its size: its records are sent again one by one, and "
                        "only a record refused alone is dead-lettered", topic)
            self._alone = self._make_producer()
        self.resent += 1
        report = reporting(on_delivery, topic, sent_alone=True)
        try:
            self._alone.produce(topic, value, key, partition=msg.partition(), headers=msg.headers(),
                                on_delivery=report)
        except (BufferError, KafkaException) as exc:
            report(exc.args[0] if isinstance(exc, KafkaException) else KafkaError(KafkaError._QUEUE_FULL),
                   Unsent(key, value))

    def produce(self, producer: Producer, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None,
                on_delivery: DeliveryCallback) -> bool:
        """Exactly once, while ``active``: a record known too large is reported so, unsent; a suspect is
        sent alone. False for any other record (the caller sends it as usual)."""
        if value is None:
            return False
        if value in self.too_large:
            self._reported.append(value)
            reporting(on_delivery, topic)(self.too_large[value], Unsent(key, value))
            return True
        if value not in self.suspects:
            return False
        producer.flush(self._flush_timeout)
        producer.produce(topic, value, key, headers=cast(Any, headers),
                         on_delivery=self._judging(value, on_delivery, topic))
        producer.flush(self._flush_timeout)
        return True

    def _judging(self, value: bytes, on_delivery: DeliveryCallback, topic: str) -> Report:
        report = reporting(on_delivery, topic, sent_alone=True)

        def judge(err: KafkaError | None, msg: Any) -> None:
            if err is None or err.code() in SIZE_ERRORS:
                self.suspects.discard(value)
            if err is not None and err.code() in SIZE_ERRORS:
                self.too_large[value] = err
            report(err, msg)

        return judge

    def committed(self) -> None:
        """A transaction committed: the dead letters of the records it reported too large with it."""
        for value in self._reported:
            self.too_large.pop(value, None)
        self._reported.clear()

    def aborted(self) -> None:
        self._reported.clear()

    def poll(self) -> None:
        if self._alone is not None:
            self._alone.poll(0)

    def flush(self, timeout: float) -> int:
        return self._alone.flush(timeout) if self._alone is not None else 0

    def close(self) -> None:
        if self.resent:
            log.info("%d records refused in a batch for size were sent again alone", self.resent)
        self._alone = None
