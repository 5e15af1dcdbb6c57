"""The librdkafka source's shutdown: leaving the group is bounded even when the client hangs."""

from __future__ import annotations

import logging
import threading

import pytest

from streamscore.config import KafkaSettings
from streamscore.engines.kafka import KafkaSource


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
