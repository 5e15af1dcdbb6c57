"""The confluent-kafka edge without a broker: client settings, bounded shutdown, transactional calls sorted
into retry / abort / fatal, delivery reports and consume errors turned into streamscore's errors, a
consumer stuck without its group coordinator replaced."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streamscore.config import KafkaSettings
from streamscore.engines.kafka import (
    REBOOTSTRAP_AFTER_MS,
    KafkaSink,
    KafkaSource,
    _consume_error,
    consumer_config,
    producer_config,
)
from streamscore.engines.kafka_oversize import Unsent, reporting
from streamscore.errors import BrokerError, DeliveryError, OutputTooLarge, TransactionAborted

SETTINGS = KafkaSettings(source_topics=["in"], destination_topic="out", dead_letter_topic="dlq",
                         client={"client.id": "c", "enable.idempotence": "true"}, consumer={"fetch.wait.max.ms": "10"},
                         producer={"linger.ms": "20", "acks": "-1"})


class StuckConsumer:
    """A consumer whose close blocks until released, like one waiting on a wedged coordinator."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.closed = False

    def close(self) -> None:
        self.entered.set()
        self.release.wait(30)
        self.closed = True


def source_with(consumer: StuckConsumer) -> KafkaSource:
    source = KafkaSource(KafkaSettings(source_topics=["in"], destination_topic="out", dead_letter_topic="dlq"))
    source._consumer = consumer  # type: ignore[assignment]  # stands in for the librdkafka client
    return source


def test_close_returns_while_the_client_is_still_stuck_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    consumer = StuckConsumer()
    source = source_with(consumer)
    try:
        with caplog.at_level(logging.WARNING, logger="streamscore.engines.kafka"):
            source.close(0.2)
        assert consumer.entered.is_set() and not consumer.closed
        assert "did not leave its group within 0.2s" in caplog.text
    finally:
        consumer.release.set()


def test_close_waits_for_a_client_that_finishes(caplog: pytest.LogCaptureFixture) -> None:
    consumer = StuckConsumer()
    consumer.release.set()
    source = source_with(consumer)
    with caplog.at_level(logging.WARNING, logger="streamscore.engines.kafka"):
        source.close(30)
    assert consumer.closed
    assert caplog.text == ""
    source.close(30)  # a second close is a no-op


def test_client_settings_merge_defaults_passthrough_and_forced_keys() -> None:
    consumer = consumer_config(SETTINGS)
    assert consumer["fetch.wait.max.ms"] == "10" and consumer["client.id"] == "c"
    assert consumer["enable.auto.commit"] is False and consumer["enable.auto.offset.store"] is False
    producer = producer_config(SETTINGS, 1000, 1_000_000, transactional_id="tx")
    assert producer["linger.ms"] == "20", "a passthrough value overrides a default"
    assert producer["acks"] == "all" and producer["enable.idempotence"] is True, "forced keys are set as required"
    assert producer["transactional.id"] == "tx"
    assert "transactional.id" not in producer_config(SETTINGS, 1000, 1_000_000)
    assert consumer["metadata.recovery.rebootstrap.trigger.ms"] == REBOOTSTRAP_AFTER_MS
    assert producer["metadata.recovery.rebootstrap.trigger.ms"] == REBOOTSTRAP_AFTER_MS
    assert REBOOTSTRAP_AFTER_MS < 300_000, "below librdkafka's 5 minutes without a broker"
    assert consumer_config(SETTINGS.model_copy(update={"client": {"metadata.recovery.rebootstrap.trigger.ms": 1}}))[
        "metadata.recovery.rebootstrap.trigger.ms"] == 1, "the client passthrough overrides it"


class ScriptedProducer:
    """Raises the given KafkaErrors from ``commit_transaction``, one per call, then succeeds."""

    def __init__(self, *errors: KafkaError) -> None:
        self.errors = list(errors)
        self.calls = 0

    def commit_transaction(self, timeout: float) -> None:
        self.calls += 1
        if self.errors:
            raise KafkaException(self.errors.pop(0))


def sink_with(producer: ScriptedProducer) -> KafkaSink:
    sink = KafkaSink(SETTINGS, 1000, 1_000_000, transactional_id="tx")
    sink._producer = producer  # type: ignore[assignment]  # stands in for the librdkafka client
    return sink


def test_retriable_transactional_errors_are_retried() -> None:
    producer = ScriptedProducer(KafkaError(KafkaError._TIMED_OUT, "slow", retriable=True))
    sink_with(producer).commit_transaction({}, object(), timeout=5)
    assert producer.calls == 2


def test_errors_kafka_says_to_abort_on_become_transaction_aborted() -> None:
    producer = ScriptedProducer(KafkaError(KafkaError._STATE, "coordinator moved", txn_requires_abort=True))
    with pytest.raises(TransactionAborted, match="coordinator moved") as info:
        sink_with(producer).commit_transaction({}, object(), timeout=5)
    assert info.value.code == KafkaError._STATE and producer.calls == 1


def test_fatal_and_exhausted_transactional_errors_become_delivery_errors() -> None:
    fenced = ScriptedProducer(KafkaError(KafkaError._FENCED, "fenced", fatal=True))
    with pytest.raises(DeliveryError, match="committing the transaction failed: fenced"):
        sink_with(fenced).commit_transaction({}, object(), timeout=5)
    slow = ScriptedProducer(*[KafkaError(KafkaError._TIMED_OUT, "slow", retriable=True)] * 3)
    with pytest.raises(DeliveryError, match="slow"):
        sink_with(slow).commit_transaction({}, object(), timeout=5)
    assert slow.calls == 3


def test_delivery_reports_become_delivery_errors_with_their_code() -> None:
    seen: list[Any] = []
    report = reporting(seen.append, "scores")
    report(None, object())
    report(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large"), Delivered(2))
    assert seen[0] is None
    assert isinstance(seen[1], DeliveryError) and seen[1].code == KafkaError.MSG_SIZE_TOO_LARGE
    assert str(seen[1]) == "an output to scores[2] was not accepted by the broker: too large"


def test_a_delivery_error_names_the_topic_without_a_partition() -> None:
    """Rejected locally (no message) or never partitioned (-1, unknown topic): the topic alone."""
    seen: list[Any] = []
    report = reporting(seen.append, "scores")
    report(KafkaError(KafkaError._MSG_TIMED_OUT, "Message timed out"), None)
    report(KafkaError(KafkaError._UNKNOWN_TOPIC, "Unknown topic"), Delivered(-1))
    assert [str(e) for e in seen] == [
        "an output to scores was not accepted by the broker: Message timed out",
        "an output to scores was not accepted by the broker: Unknown topic"]


def test_a_size_refusal_is_judged_on_the_record_alone() -> None:
    """The broker refuses whole record batches: a refused record sent with others is sent again
    alone; only a verdict on the record alone (sent alone, or refused before sending) is an
    OutputTooLarge, which the pipeline dead-letters. Other errors, and under transactions (no
    ``alone``) every refusal, stay DeliveryErrors."""
    seen: list[Any] = []
    again: list[Any] = []
    too_large = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large")
    in_batch = reporting(seen.append, "scores", alone=lambda err, msg, on_delivery: again.append((msg, on_delivery)))
    in_batch(too_large, Delivered(2, b"big"))
    assert seen == [] and again[0][0].value() == b"big" and again[0][1] == seen.append
    in_batch(KafkaError(KafkaError._MSG_TIMED_OUT, "Message timed out"), Delivered(2, b"small"))
    in_batch(too_large, Unsent(b"k", b"huge"))
    reporting(seen.append, "scores", sent_alone=True)(too_large, Delivered(3, b"big"))
    reporting(seen.append, "scores")(too_large, Delivered(1, b"big"))
    timed_out, unsent, alone, no_alone = seen
    assert type(timed_out) is DeliveryError and type(no_alone) is DeliveryError
    assert isinstance(unsent, OutputTooLarge) and (unsent.where, unsent.value) == ("scores", b"huge")
    assert isinstance(alone, OutputTooLarge) and (alone.where, alone.value) == ("scores[3]", b"big")
    assert alone.why == "Broker: Message size too large" and alone.code == KafkaError.MSG_SIZE_TOO_LARGE


def test_under_transactions_a_size_refusal_in_a_batch_is_no_verdict_on_the_record() -> None:
    seen: list[Any] = []
    sink = KafkaSink(SETTINGS, 1000, 1_000_000, transactional_id="tx")
    refused = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large")
    reporting(seen.append, "scores", sink._oversize.alone)(refused, Delivered(2, b"big"))
    [error] = seen
    assert isinstance(error, OutputTooLarge) and not error.alone and error.where == "scores[2]"


def test_a_record_over_the_producers_own_limit_is_refused_as_too_large_before_sending() -> None:
    """A real librdkafka producer (it never connects: nothing is sent)."""
    sink = KafkaSink(KafkaSettings(source_topics=["in"], destination_topic="out", dead_letter_topic="dlq",
                                   bootstrap_servers="127.0.0.1:9"), 1000, 1000)
    sink.start()
    seen: list[Any] = []
    sink.produce_many("out", [(b"k", b"x" * 1_100_000)], seen.append)
    [error] = seen
    assert isinstance(error, OutputTooLarge) and error.value == b"x" * 1_100_000 and error.where == "out"
    sink.close()


class Delivered:
    """The part of a librdkafka message a delivery report reads."""

    def __init__(self, partition: int, value: bytes | None = None) -> None:
        self._partition = partition
        self._value = value

    def partition(self) -> int:
        return self._partition

    def value(self) -> bytes | None:
        return self._value

    def topic(self) -> str:
        return "scores"

    def key(self) -> bytes | None:
        return None


class ErrorMessage:
    def __init__(self, error: KafkaError | None) -> None:
        self._error = error

    def error(self) -> KafkaError | None:
        return self._error


def test_consume_errors_are_skipped_unless_fatal(caplog: pytest.LogCaptureFixture) -> None:
    assert _consume_error(ErrorMessage(None)) is False
    with caplog.at_level(logging.WARNING, logger="streamscore.engines.kafka"):
        assert _consume_error(ErrorMessage(KafkaError(KafkaError._PARTITION_EOF, "end of partition"))) is True
    assert "end of partition" in caplog.text
    with pytest.raises(BrokerError, match="consumer fatal error: gone") as info:
        _consume_error(ErrorMessage(KafkaError(KafkaError._FATAL, "gone", fatal=True)))
    assert info.value.code == KafkaError._FATAL


class BadHeaders:
    def headers(self) -> Any:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")


def test_unreadable_headers_are_replaced_by_a_note() -> None:
    source = KafkaSource(SETTINGS)
    headers = source.headers(BadHeaders())  # type: ignore[arg-type]
    assert headers == [("streamscore.headers.dropped", b"a header name is not UTF-8; the input's headers are left out")]


class GroupClient:
    """Stands in for librdkafka's consumer: records its configuration, subscription and close, and
    lets a test report the group's state through the statistics callback it was given."""

    def __init__(self, conf: dict[str, Any], made: list[GroupClient]) -> None:
        self.conf = conf
        self.callbacks: dict[str, Any] = {}
        self.owned = [KafkaTopicPartition("in", 0), KafkaTopicPartition("in", 1)]
        self.closed = threading.Event()
        made.append(self)

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.callbacks = callbacks

    def report(self, state: str, age_ms: int) -> None:
        self.conf["stats_cb"](json.dumps({"cgrp": {"state": state, "stateage": age_ms}}))

    def assignment(self) -> list[KafkaTopicPartition]:
        return self.owned

    def consume(self, max_messages: int, timeout: float) -> list[Any]:
        return []

    def close(self) -> None:
        self.callbacks["on_revoke"](self, self.owned)  # librdkafka revokes inside close
        self.closed.set()


def test_a_consumer_whose_group_stays_without_a_coordinator_is_replaced_and_its_partitions_lost(
        caplog: pytest.LogCaptureFixture) -> None:
    made: list[GroupClient] = []
    source = KafkaSource(SETTINGS, client=lambda conf: GroupClient(conf, made),  # type: ignore[arg-type,return-value]
                         stuck_after_ms=30_000)
    calls: list[tuple[str, list[tuple[str, int]]]] = []
    source.subscribe(lambda parts: calls.append(("assign", parts)), lambda parts: calls.append(("revoke", parts)),
                     lambda parts: calls.append(("lost", parts)))
    first = made[0]
    assert first.conf["statistics.interval.ms"] == 5_000
    first.report("up", 600_000)
    first.report("query-coord", 29_000)
    source.poll(10, 0)
    assert len(made) == 1, "a group up, or without its coordinator for less than the limit, is left alone"

    first.report("query-coord", 31_000)
    with caplog.at_level(logging.WARNING, logger="streamscore.engines.kafka"):
        source.poll(10, 0)
    assert "in state query-coord for 31s; replacing it with a new client (2 partitions" in caplog.text
    assert len(made) == 2 and made[1].callbacks, "a new client subscribed"
    assert first.closed.wait(5)
    assert calls == [("lost", [("in", 0), ("in", 1)])], "the old client's revoke (inside its close) is not passed on"
    made[1].callbacks["on_assign"](None, [KafkaTopicPartition("in", 0)])
    assert calls[-1] == ("assign", [("in", 0)])
    source.poll(10, 0)
    assert len(made) == 2, "the new client has a fresh watch"
