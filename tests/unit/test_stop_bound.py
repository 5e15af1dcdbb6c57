"""``stop_bound_s`` is a real bound under exactly-once: every step of a stop spends one deadline,
even when every broker call stalls for as long as it is allowed to."""

from __future__ import annotations

import threading
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from streamscore.config import KafkaSettings
from streamscore.engines.kafka import KafkaSink
from tests.unit.fakes import FakeSource, messages, pipeline, settings


class StalledProducer:
    """A librdkafka producer whose broker never answers: each call waits out its timeout, then
    fails as librdkafka does (retriable timeouts); records are queued and never acknowledged."""

    def __init__(self) -> None:
        self.queued = 0
        self.calls: list[tuple[str, float]] = []

    def produce(self, *args: Any, **kwargs: Any) -> None:
        self.queued += 1

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        self._stall("flush", timeout)
        return self.queued

    def begin_transaction(self) -> None:
        self.calls.append(("begin", 0.0))

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        self._stall("send_offsets", timeout)
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "stalled", retriable=True))

    def commit_transaction(self, timeout: float) -> None:
        self._stall("commit", timeout)
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "stalled", retriable=True))

    def abort_transaction(self, timeout: float) -> None:
        self._stall("abort", timeout)
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "stalled", retriable=True))

    def _stall(self, call: str, timeout: float) -> None:
        self.calls.append((call, timeout))
        time.sleep(min(timeout, 5.0))


class SlowToLeave(FakeSource):
    """Leaving the group takes every second it is given."""

    def close(self, timeout: float) -> None:
        time.sleep(timeout)
        super().close(timeout)


def test_a_stop_under_exactly_once_ends_within_stop_bound_s_when_every_broker_call_stalls() -> None:
    s = settings(max_batch_size=10, drain_timeout_s=1.0, commit_interval_ms=60_000)
    s = s.model_copy(update={"delivery": "exactly_once",
                             "kafka": s.kafka.model_copy(update={"session_timeout_ms": 1000})})
    sink = KafkaSink(KafkaSettings(source_topics=["in"], destination_topic="out", dead_letter_topic="dlq"),
                     1000, 1_000_000, transactional_id="t", transaction_timeout_s=30.0)
    stalled = StalledProducer()
    sink._producer = stalled  # type: ignore[assignment]  # stands in for the librdkafka client
    source = SlowToLeave(messages(30))
    p = pipeline(source, sink, s, transactions=sink, leave_timeout=1.0)  # type: ignore[arg-type]
    stop = threading.Event()
    stopped_at = 0.0
    step = p.step

    def step_then_stop() -> None:
        nonlocal stopped_at
        step()
        if p.totals.consumed >= 20 and not stop.is_set():
            stop.set()
            stopped_at = time.monotonic()

    p.step = step_then_stop  # type: ignore[method-assign]
    drained = p.run(stop)
    took = time.monotonic() - stopped_at

    assert took <= s.stop_bound_s, f"the stop took {took:.2f}s, over stop_bound_s {s.stop_bound_s}s"
    assert took >= s.stop_bound_s - 0.3, "the stalls were waited out, not skipped"
    assert source.closed
    assert drained, "the aborted work is redone by the next owner: nothing is left in flight"
    assert not any(call == "commit" for call, _ in stalled.calls), "no commit with outputs unacknowledged"
    assert sink._producer is stalled


def test_transactional_retries_share_one_budget() -> None:
    """Retriable failures are retried only while the caller's timeout lasts, not each with a fresh one."""
    sink = KafkaSink(KafkaSettings(source_topics=["in"], destination_topic="out", dead_letter_topic="dlq"),
                     1000, 1_000_000, transactional_id="t")
    stalled = StalledProducer()
    sink._producer = stalled  # type: ignore[assignment]
    started = time.monotonic()
    try:
        sink.commit_transaction({("in", 0): 5}, object(), timeout=0.6)
    except Exception as exc:  # noqa: BLE001 - which error is asserted below
        error = exc
    took = time.monotonic() - started
    assert took <= 0.6 + 0.1
    assert "no time left" in str(error) or "failed" in str(error)
    assert sum(t for _, t in stalled.calls) <= 0.6 + 0.05, "the attempts' timeouts add up to the budget"
