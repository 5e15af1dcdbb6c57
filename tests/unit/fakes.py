"""In-memory fakes of the stage protocols (source, producer, runner) and a pipeline wired over them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from streamscore.breaker import Breaker
from streamscore.config import Settings, load_settings
from streamscore.core.batching import Batcher
from streamscore.core.scorer import Scorer, ScoringSpec
from streamscore.delivery.committers import build_committer
from streamscore.destinations.base import Outputs
from streamscore.destinations.kafka import KafkaTopic
from streamscore.engines.base import Transactions
from streamscore.engines.kafka import KafkaDeadLetters
from streamscore.errors import DeliveryError, OutputTooLarge
from streamscore.metrics import Metrics
from streamscore.pipeline import Pipeline
from streamscore.runners.base import ModelRunner

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "streamscore" / "demo" / "config.yaml"
EVENT = {"amount": 10.0, "merchant": {"category": "fuel", "country": "US"}, "card": {"present": True, "age_days": 9},
         "hour": 3, "transaction_id": "t"}


class Message:
    """An input message as the scorer and the pipeline see it (the part of confluent_kafka.Message
    they use); the key defaults to ``"<partition>-<offset>"``."""

    def __init__(self, topic: str, partition: int, offset: int, value: bytes | None, key: bytes | None = None,
                 timestamp: tuple[int, int] = (1, 1_700_000_000_000)) -> None:
        self._t, self._p, self._o, self._v, self._ts = topic, partition, offset, value, timestamp
        self._k = f"{partition}-{offset}".encode() if key is None else key

    def topic(self) -> str: return self._t
    def partition(self) -> int: return self._p
    def offset(self) -> int: return self._o
    def key(self) -> bytes: return self._k
    def value(self) -> bytes | None: return self._v
    def headers(self) -> None: return None
    def timestamp(self) -> tuple[int, int]: return self._ts


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

    def headers(self, message: Any) -> list[tuple[str, bytes | None]]:
        return list(message.headers() or [])

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
    """A producer (``engines.base.Producer``): acknowledges on poll/flush, unless ``hold`` is set;
    ``fail`` picks records to reject, ``too_large`` (topic, key) records to refuse for their size
    alone, as the Kafka edge reports them (``OutputTooLarge``)."""

    def __init__(self, fail: Callable[[bytes], bool] = lambda key: False,
                 too_large: Callable[[str, bytes | None], bool] = lambda topic, key: False) -> None:
        self.records: list[tuple[str, bytes | None, bytes | None]] = []
        self.headers: list[Any] = []
        """Each record's headers, in the order of ``records``."""
        self.unacked: list[tuple[Callable[[Any, Any], None], bytes | None, str, bytes | None]] = []
        self.fail = fail
        self.too_large = too_large
        self.too_large_alone = True
        """Whether a size refusal judges the record alone (False: refused in a batch under transactions)."""
        self.hold = False

    def produce(self, topic: str, key: bytes | None, value: bytes | None, headers: Any,
                on_delivery: Callable[[Any, Any], None]) -> None:
        self.records.append((topic, key, value))
        self.headers.append(headers)
        self.unacked.append((on_delivery, key, topic, value))

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
        for callback, key, topic, value in reversed(unacked):  # out of order on purpose
            callback(self._verdict(key, topic, value), None)

    def _verdict(self, key: bytes | None, topic: str, value: bytes | None) -> DeliveryError | None:
        if key is not None and self.fail(key):
            return DeliveryError("broker said no")
        if self.too_large(topic, key):
            why = "Broker: Message size too large"
            return OutputTooLarge(f"an output to {topic}[0] was not accepted by the broker: {why}", 10, f"{topic}[0]",
                                  why, value, self.too_large_alone)
        return None

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


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


def pipeline(source: FakeSource, sink: FakeSink, s: Settings, runner: ModelRunner | None = None,
             transactions: Transactions | None = None, leave_timeout: float = 10.0,
             more_topics: Sequence[str] = ()) -> Pipeline:
    """The stages wired as the service wires them, over the fakes (``more_topics``: more Kafka destinations)."""
    metrics = Metrics()
    topics = [s.kafka.destination_topic, *more_topics]
    outputs = Outputs([KafkaTopic(sink, topic) for topic in topics], KafkaDeadLetters(sink, s.kafka.dead_letter_topic))
    batcher: Batcher[Any] = Batcher(s.batching.max_batch_size, s.batching.max_wait_ms / 1000.0)
    committer = build_committer(s.delivery, source, outputs, batcher, metrics, s.batching.drain_timeout_s,
                                transactions)
    scorer = Scorer(ScoringSpec.from_settings(s), runner or FirstColumnRunner())
    return Pipeline(source, scorer, outputs, committer, batcher, Breaker(s.breaker), s.batching, metrics,
                    leave_timeout=leave_timeout)


def run_until_consumed(p: Pipeline, source: FakeSource, total: int, max_steps: int = 10_000) -> None:
    stop = threading.Event()
    original = p.step

    def step() -> None:
        original()
        if p.totals.consumed >= total and not source.pending:
            stop.set()

    p.step = step  # type: ignore[method-assign]
    p.run(stop)
