"""Exactly-once delivery and the lag metric, with in-memory fakes of the source and sink (no broker)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from streamscore.delivery.committers import MAX_ABORTS_IN_A_ROW
from streamscore.delivery.deadline import Deadline
from streamscore.errors import DeliveryError, TransactionAborted
from streamscore.pipeline import Pipeline
from tests.unit.fakes import FakeSink, FakeSource, messages, pipeline, run_until_consumed, settings


class TransactionalSink(FakeSink):
    """Keeps each transaction's records apart: committed ones are what a read_committed reader sees."""

    def __init__(self, fail: Callable[[bytes], bool] = lambda key: False,
                 too_large: Callable[[str, bytes | None], bool] = lambda topic, key: False) -> None:
        super().__init__(fail, too_large)
        self.open: list[tuple[str, bytes | None, bytes | None]] | None = None
        self.visible: list[tuple[str, bytes | None, bytes | None]] = []
        self.offsets: list[dict[tuple[str, int], int]] = []
        self.aborts = 0
        self.refuse_commits = 0
        """How many of the next commits Kafka answers with 'abort this transaction'."""

    def begin_transaction(self) -> None:
        assert self.open is None, "one transaction at a time"
        self.open = []

    def produce(self, topic: str, key: bytes | None, value: bytes | None, headers: Any,
                on_delivery: Callable[[Any, Any], None]) -> None:
        assert self.open is not None, "every output inside a transaction"
        self.open.append((topic, key, value))
        super().produce(topic, key, value, headers, on_delivery)

    def commit_transaction(self, positions: Mapping[tuple[str, int], int], group_metadata: object,
                           timeout: float) -> None:
        assert timeout > 0
        assert self.open is not None and group_metadata == "group-metadata"
        assert not self.unacked, "outputs are flushed before their offsets join the transaction"
        if self.refuse_commits:
            self.refuse_commits -= 1
            raise TransactionAborted("committing the transaction: coordinator moved")
        self.visible += self.open
        self.offsets.append(dict(positions))
        self.open = None

    def abort_transaction(self, timeout: float) -> None:
        assert self.open is not None
        self.aborts += 1
        self.open = None
        self.unacked = []

    def committed(self) -> dict[tuple[str, int], int]:
        merged: dict[tuple[str, int], int] = {}
        for positions in self.offsets:
            for tp, pos in positions.items():
                assert pos >= merged.get(tp, 0), "committed positions never move backwards"
                merged[tp] = pos
        return merged


def exactly_once(**batching: Any) -> Any:
    s = settings(**batching)
    return s.model_copy(update={"delivery": "exactly_once"})


def eos_pipeline(source: FakeSource, sink: TransactionalSink, **batching: Any) -> Pipeline:
    return pipeline(source, sink, exactly_once(**batching), transactions=sink)


def test_outputs_and_offsets_are_committed_together_once() -> None:
    msgs = messages(50, bad_every=9)
    source, sink = FakeSource(msgs), TransactionalSink()
    p = eos_pipeline(source, sink, max_batch_size=10)
    run_until_consumed(p, source, len(msgs))
    assert Counter(k for _, k, _ in sink.visible) == Counter(m.key() for m in msgs)
    assert sum(1 for t, _, _ in sink.visible if t == "transactions-dlq") == 3 * 6
    assert sink.committed() == {("in", 0): 50, ("in", 1): 50, ("in", 2): 50}
    assert source.commits == [], "offsets go through the transaction, never the consumer"
    assert sink.aborts == 0 and sink.open is None


def test_a_refused_output_aborts_and_the_work_is_redone_once() -> None:
    refused: set[bytes] = set()

    def fail_once(key: bytes) -> bool:
        if key == b"1-17" and key not in refused:
            refused.add(key)
            return True
        return False

    msgs = messages(40)
    source, sink = FakeSource(msgs), TransactionalSink(fail=fail_once)
    p = eos_pipeline(source, sink, max_batch_size=5)
    run_until_consumed(p, source, len(msgs))
    assert sink.aborts == 1
    assert source.seeks, "the consumer was rewound"
    keys = [k for _, k, _ in sink.visible]
    assert Counter(keys) == Counter(m.key() for m in msgs), "every event once in committed transactions"
    assert sink.committed() == {("in", 0): 40, ("in", 1): 40, ("in", 2): 40}
    assert p.metrics.transaction_aborts._value.get() == 1


def test_a_commit_kafka_asks_to_abort_rewinds_to_the_last_committed_positions() -> None:
    msgs = messages(30)
    source, sink = FakeSource(msgs), TransactionalSink()
    p = eos_pipeline(source, sink, max_batch_size=6)
    p.start()
    for _ in range(3):
        p.step()
    first = dict(sink.committed())
    assert first, "a transaction was committed"
    sink.refuse_commits = 1
    p.step()
    assert sink.aborts == 1
    assert sink.committed() == first, "the refused transaction committed nothing"
    rewound = source.seeks[0]
    assert rewound and all(rewound[tp] == first.get(tp, 0) for tp in rewound), "back to what was committed"
    run_until_consumed(p, source, len(msgs))
    assert Counter(k for _, k, _ in sink.visible) == Counter(m.key() for m in msgs)


def test_transactions_that_keep_failing_stop_the_service_without_committing() -> None:
    msgs = messages(20)
    source, sink = FakeSource(msgs), TransactionalSink()
    sink.refuse_commits = MAX_ABORTS_IN_A_ROW
    p = eos_pipeline(source, sink, max_batch_size=5)
    with pytest.raises(DeliveryError, match=f"{MAX_ABORTS_IN_A_ROW} transactions in a row"):
        run_until_consumed(p, source, len(msgs))
    assert sink.offsets == [] and sink.visible == []
    assert source.closed


def test_revocation_commits_the_open_transaction_first() -> None:
    msgs = messages(30, partitions=2)
    source, sink = FakeSource(msgs), TransactionalSink()
    source.revoke_after = 21
    p = eos_pipeline(source, sink, max_batch_size=100, max_wait_ms=10_000)
    p.start()
    for _ in range(4):
        p.step()
    assert sink.offsets, "revocation committed a transaction"
    assert sink.offsets[0][("in", 0)] == sum(1 for m in msgs[:21] if m.partition() == 0)
    assert ("in", 0) not in p.assigned


def test_lost_partitions_abort_the_transaction_and_the_rest_is_re_read() -> None:
    msgs = messages(30, partitions=2)
    source, sink = FakeSource(msgs), TransactionalSink()
    p = eos_pipeline(source, sink, max_batch_size=4, commit_interval_ms=60_000)
    p.start()
    for _ in range(3):
        p.step()
    assert sink.open, "outputs are waiting in an open transaction"
    source.callbacks[2]([("in", 0)])
    assert sink.aborts == 1 and sink.open is None, "their outputs are never committed"
    assert p.metrics.transaction_aborts._value.get() == 0, "losing partitions is not a failure"
    assert set(source.seeks[-1]) == {("in", 1)}, "only the partitions still owned are re-read"


def test_lag_is_the_high_watermark_minus_the_resume_position() -> None:
    msgs = messages(20, partitions=2)
    source, sink = FakeSource(msgs), FakeSink()
    source.ends = {("in", 0): 120, ("in", 1): 15}  # 15: an under-reporting broker, behind the position
    p = pipeline(source, sink, settings(max_batch_size=10))
    run_until_consumed(p, source, len(msgs))
    lag = {labels["partition"]: value for labels, value in _samples(p, "streamscore_consumer_lag")}
    assert lag == {"0": 100.0, "1": 0.0}
    source.callbacks[1]([("in", 0)])
    assert {labels["partition"] for labels, _ in _samples(p, "streamscore_consumer_lag")} == {"1"}


def _samples(p: Any, name: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for metric in p.metrics.registry.collect() if metric.name == name
            for s in metric.samples]


class OutOfTimeAborts(TransactionalSink):
    """Aborts refuse a deadline with no time left, as KafkaSink does."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def begin_transaction(self) -> None:
        self.calls.append("begin")
        super().begin_transaction()

    def abort_transaction(self, timeout: float) -> None:
        if timeout <= 0:
            raise TransactionAborted("aborting the transaction: no time left of the stop or commit budget")
        self.calls.append("abort")
        super().abort_transaction(timeout)


def test_an_abort_a_deadline_had_no_time_for_happens_before_the_next_transaction() -> None:
    msgs = messages(30, partitions=2)
    source, sink = FakeSource(msgs), OutOfTimeAborts()
    p = eos_pipeline(source, sink, max_batch_size=4, commit_interval_ms=60_000)
    p.start()
    for _ in range(3):
        p.step()
    assert sink.open is not None, "outputs wait in an open transaction"
    committer = p.committer
    committer._abort("revoked with no time left", Deadline(0.0), failure=False)  # type: ignore[attr-defined]
    assert sink.open is not None and "abort" not in sink.calls, "no time: the transaction is still open"
    run_until_consumed(p, source, len(msgs))
    first_abort = sink.calls.index("abort")
    assert sink.calls[first_abort + 1] == "begin", "aborted before the next transaction began"
    assert Counter(k for _, k, _ in sink.visible) == Counter(m.key() for m in msgs), "every event once"


def test_an_output_refused_as_too_large_is_dead_lettered_in_the_same_transaction() -> None:
    """A record librdkafka refuses before sending (over ``message.max.bytes``) leaves the transaction
    intact: the dead letter joins it, nothing is aborted."""
    msgs = messages(30)
    source = FakeSource(msgs)
    sink = TransactionalSink(too_large=lambda topic, key: topic == "transaction-scores" and key == b"2-11")
    p = eos_pipeline(source, sink, max_batch_size=6)
    run_until_consumed(p, source, len(msgs))
    assert sink.aborts == 0
    assert [k for t, k, _ in sink.visible if t == "transactions-dlq"] == [b"2-11"]
    assert sink.committed() == {("in", 0): 30, ("in", 1): 30, ("in", 2): 30}
    assert p.metrics.dead_lettered.labels("output_too_large")._value.get() == 1


def test_an_output_the_broker_refuses_for_size_stops_exactly_once_with_one_line() -> None:
    """Refused in a batch, the record cannot be judged alone and its transaction has failed: the
    service stops, naming the topic, with nothing of that transaction committed."""
    msgs = messages(30)
    source = FakeSource(msgs)
    sink = TransactionalSink(too_large=lambda topic, key: topic == "transaction-scores" and key == b"2-11")
    sink.too_large_alone = False
    p = eos_pipeline(source, sink, max_batch_size=6)
    with pytest.raises(DeliveryError, match=r"transaction-scores\[0\].*exactly_once .* not dead-lettered"):
        run_until_consumed(p, source, len(msgs))
    assert sink.committed().get(("in", 2), 0) <= 11
    assert not any(t == "transactions-dlq" for t, _, _ in sink.visible)
