"""librdkafka's delivery reports as streamscore's errors, and records refused for their size.

A record larger than its topic's ``max.message.bytes`` is refused by the broker, but the broker
judges whole record batches: every record batched with the large one is refused with it. Only a
verdict on the record alone is an ``OutputTooLarge`` (which the pipeline dead-letters): librdkafka
refused it before sending (over ``message.max.bytes``), or it was sent in a batch of its own.
``Oversize`` obtains that verdict for a record refused in a batch, at least once: a second
idempotent producer (``batch.num.messages`` 1, made on first use) sends it again at once, alone,
to the same partition. Not under transactions: there the refusal has failed the open transaction
(librdkafka makes it abortable), and in the redone transaction the record is rendered anew (its
bytes differ: ``scored_at_ms``), so the edge cannot recognise it; the refusal is reported as an
``OutputTooLarge`` with ``alone`` False, and the exactly-once committer stops with one line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

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


def too_large(err: KafkaError, msg: Any, topic: str, alone: bool = True) -> OutputTooLarge:
    where = _where(topic, msg)
    return OutputTooLarge(f"an output to {where} was not accepted by the broker: {err.str()}", err.code(), where,
                          err.str(), msg.value(), alone)


class Oversize:
    """The verdict on records the broker refused for size within a batch (see the module)."""

    def __init__(self, make_producer: Callable[[], Producer], transactional: bool) -> None:
        self._make_producer = make_producer
        self.transactional = transactional
        self._alone: Producer | None = None
        self.resent = 0
        """Records sent again alone (logged at close)."""

    def alone(self, err: KafkaError, msg: Any, on_delivery: DeliveryCallback) -> None:
        """A record refused for size in a batch (runs inside ``poll``/``flush``)."""
        topic, key, value = msg.topic(), msg.key(), msg.value()
        if self.transactional:
            on_delivery(too_large(err, msg, topic, alone=False))
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

    def poll(self) -> None:
        if self._alone is not None:
            self._alone.poll(0)

    def flush(self, timeout: float) -> int:
        return self._alone.flush(timeout) if self._alone is not None else 0

    def close(self) -> None:
        if self.resent:
            log.info("%d records refused in a batch for size were sent again alone", self.resent)
        self._alone = None
