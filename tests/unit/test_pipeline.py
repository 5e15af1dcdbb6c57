"""The pipeline's guarantees with in-memory fakes of the source and sink (no broker)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from streamscore.config import Settings, load_settings
from streamscore.errors import DeliveryError
from streamscore.metrics import Metrics
from streamscore.pipeline import Pipeline
from streamscore.scoring import Scorer

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "streamscore" / "demo" / "config.yaml"
EVENT = {"amount": 10.0, "merchant": {"category": "fuel", "country": "US"}, "card": {"present": True, "age_days": 9},
         "hour": 3, "transaction_id": "t"}


class Message:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self._t, self._p, self._o, self._v = topic, partition, offset, value

    def topic(self) -> str: return self._t
    def partition(self) -> int: return self._p
    def offset(self) -> int: return self._o
    def key(self) -> bytes: return f"{self._p}-{self._o}".encode()
    def value(self) -> bytes: return self._v
    def headers(self) -> None: return None
    def timestamp(self) -> tuple[int, int]: return (1, 1_700_000_000_000)


class FakeSource:
    """Hands out prepared messages in chunks; records commits; can revoke mid-stream."""

    def __init__(self, messages: list[Message], chunk: int = 7) -> None:
        self.all = list(messages)
        self.pending = list(messages)
        self.chunk = chunk
        self.commits: list[dict[tuple[str, int], int]] = []
        self.polled = 0
        self.callbacks: tuple[Callable[..., None], ...] = ()
        self.revoke_after: int | None = None
        self.closed = False
        self.paused: set[tuple[str, int]] = set()
        self.polls = 0
        self.seeks: list[dict[tuple[str, int], int]] = []
        self.ends: dict[tuple[str, int], int] = {}
        """High watermarks to report (the lag metric's input)."""

    def subscribe(self, on_assign: Callable[..., None], on_revoke: Callable[..., None],
                  on_lost: Callable[..., None]) -> None:
        self.callbacks = (on_assign, on_revoke, on_lost)
        on_assign(sorted({(m.topic(), m.partition()) for m in self.pending}))

    def pause(self, partitions: list[tuple[str, int]]) -> None:
        self.paused.update(partitions)

    def resume(self, partitions: list[tuple[str, int]]) -> None:
        self.paused.difference_update(partitions)

    def poll(self, max_messages: int, timeout: float) -> Sequence[Message]:
        self.polls += 1
        if self.paused:  # this fake pauses everything or nothing
            return []
        if self.revoke_after is not None and self.polled >= self.revoke_after:
            self.revoke_after = None
            self.callbacks[1]([("in", 0)])
        out, self.pending = self.pending[:min(max_messages, self.chunk)], self.pending[min(max_messages, self.chunk):]
        self.polled += len(out)
        return out

    def commit(self, positions: Mapping[tuple[str, int], int], asynchronous: bool) -> None:
        assert not asynchronous
        self.commits.append(dict(positions))

    def seek(self, positions: Mapping[tuple[str, int], int]) -> None:
        """Hand out each partition again from the given offset, in the original order."""
        self.seeks.append(dict(positions))
        pending = {id(m) for m in self.pending if (m.topic(), m.partition()) not in positions}
        self.pending = [m for m in self.all if id(m) in pending
                        or positions.get((m.topic(), m.partition()), 1 << 62) <= m.offset()]

    def high_watermarks(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return {tp: self.ends[tp] for tp in partitions if tp in self.ends}

    def group_metadata(self) -> object:
        return "group-metadata"

    def close(self, timeout: float) -> None:
        assert timeout > 0
        self.closed = True

    def committed(self) -> dict[tuple[str, int], int]:
        merged: dict[tuple[str, int], int] = {}
        for c in self.commits:
            for tp, pos in c.items():
                assert pos >= merged.get(tp, 0), "commits never move backwards"
                merged[tp] = pos
        return merged


class FakeSink:
    """Acknowledges on poll/flush, unless ``hold`` is set; ``fail`` picks records to reject."""

    def __init__(self, fail: Callable[[bytes], bool] = lambda key: False) -> None:
        self.records: list[tuple[str, bytes | None, bytes | None]] = []
        self.unacked: list[tuple[Callable[[Any, Any], None], bytes | None]] = []
        self.fail = fail
        self.hold = False

    def produce(self, topic: str, key: bytes | None, value: bytes | None, headers: Any,
                on_delivery: Callable[[Any, Any], None]) -> None:
        self.records.append((topic, key, value))
        self.unacked.append((on_delivery, key))

    def produce_many(self, topic: str, records: Any, on_delivery: Callable[[Any, Any], None]) -> None:
        for key, value in records:
            self.produce(topic, key, value, None, on_delivery)

    def poll(self, timeout: float) -> None:
        if not self.hold:
            self._ack_all()

    def flush(self, timeout: float) -> int:
        self._ack_all()
        return 0

    def _ack_all(self) -> None:
        unacked, self.unacked = self.unacked, []
        for callback, key in reversed(unacked):  # out of order on purpose
            callback("broker said no" if key is not None and self.fail(key) else None, None)

    def close(self) -> None:
        pass

    # exactly-once only (the Sink protocol has them): TransactionalSink (test_pipeline_exactly_once) implements them
    def begin_transaction(self) -> None:
        raise AssertionError("FakeSink is not transactional")

    def commit_transaction(self, positions: Mapping[Any, int], group_metadata: object) -> None:
        raise AssertionError("FakeSink is not transactional")

    def abort_transaction(self) -> None:
        raise AssertionError("FakeSink is not transactional")


class FirstColumnRunner:
    name, version, provider = "fake", "1", "cpu"

    def load(self) -> None: ...
    def close(self) -> None: ...

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return np.zeros(matrix.shape[0], dtype=np.float32)


def settings(**batching: Any) -> Settings:
    base = load_settings(DEMO_CONFIG, env={})
    return base.model_copy(update={"batching": base.batching.model_copy(update={"commit_interval_ms": 0, **batching})})


def messages(per_partition: int, partitions: int = 3, bad_every: int = 0) -> list[Message]:
    out = []
    for offset in range(per_partition):
        for p in range(partitions):
            bad = bad_every and offset % bad_every == 0
            out.append(Message("in", p, offset, b"{oops" if bad else orjson.dumps(EVENT)))
    return out


def pipeline(source: FakeSource, sink: FakeSink, s: Settings) -> Pipeline:
    return Pipeline(s, source, sink, Scorer(s, FirstColumnRunner()), Metrics())


def run_until_consumed(p: Pipeline, source: FakeSource, total: int, max_steps: int = 10_000) -> None:
    stop = threading.Event()
    original = p.step

    def step() -> None:
        original()
        if p.totals.consumed >= total and not source.pending:
            stop.set()

    p.step = step  # type: ignore[method-assign]
    p.run(stop)


def test_every_event_is_written_once_and_commits_reach_the_end() -> None:
    msgs = messages(50, bad_every=9)
    source, sink = FakeSource(msgs), FakeSink()
    p = pipeline(source, sink, settings(max_batch_size=10))
    run_until_consumed(p, source, len(msgs))
    assert Counter(k for _, k, _ in sink.records) == Counter(m.key() for m in msgs)
    assert sum(1 for t, _, _ in sink.records if t == "transactions-dlq") == 3 * 6
    assert source.committed() == {("in", 0): 50, ("in", 1): 50, ("in", 2): 50}
    assert source.closed


def test_a_fatal_delivery_error_stops_without_committing_past_it() -> None:
    msgs = messages(40)
    source, sink = FakeSource(msgs), FakeSink(fail=lambda key: key == b"1-17")
    p = pipeline(source, sink, settings(max_batch_size=5))
    with pytest.raises(DeliveryError, match="broker said no"):
        run_until_consumed(p, source, len(msgs))
    committed = source.committed()
    assert committed.get(("in", 1), 0) <= 17, "never past the failed record"
    assert source.closed


def test_consumption_waits_when_the_uncommitted_window_is_full() -> None:
    msgs = messages(200)
    source, sink = FakeSource(msgs), FakeSink()
    sink.hold = True
    p = pipeline(source, sink, settings(max_batch_size=10, max_in_flight=40))
    p.start()
    polls_before = source.polls
    for _ in range(200):
        p.step()
    assert 40 <= source.polled <= 40 + 10, "the window bounds consumption (plus at most one batch)"
    assert source.commits == []
    assert source.paused == {("in", 0), ("in", 1), ("in", 2)}, "a full window pauses the partitions"
    assert source.polls - polls_before >= 150, "and polling goes on, so the consumer stays in its group"
    sink.hold = False
    for _ in range(200):
        p.step()
    assert source.polled > 100, "consumption resumes once outputs are acknowledged and committed"
    assert not source.paused


def test_revoked_partitions_are_drained_and_committed_before_release() -> None:
    msgs = messages(30, partitions=2)
    source, sink = FakeSource(msgs), FakeSink()
    source.revoke_after = 21
    p = pipeline(source, sink, settings(max_batch_size=100, max_wait_ms=10_000))
    p.start()
    for _ in range(4):
        p.step()
    assert source.commits, "revocation committed what was consumed so far"
    first = source.commits[0]
    assert first[("in", 0)] == sum(1 for m in msgs[:21] if m.partition() == 0)
    assert ("in", 0) not in p.assigned
