"""The small interfaces between the pipeline and a message broker: a source, a producer, an engine."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from streamscore.core.model import ModelRunner
from streamscore.core.records import DeadLetter, Headers, SourceMessage, TopicPartition
from streamscore.core.scorer import ScoringSpec

if TYPE_CHECKING:
    from streamscore.metrics import Metrics, Totals
    from streamscore.server import Health

PartitionsCallback = Callable[[list[TopicPartition]], None]
DeliveryCallback = Callable[..., None]
"""``on_delivery(error, message=None)``: ``error`` is None or a DeliveryError; called once per record."""


class Source(Protocol):
    """Consumes events of a consumer group and commits positions."""

    def subscribe(self, on_assign: PartitionsCallback, on_revoke: PartitionsCallback,
                  on_lost: PartitionsCallback) -> None:
        """Join the group; the callbacks run inside ``poll`` when the assignment changes."""

    def poll(self, max_messages: int, timeout: float) -> Sequence[SourceMessage]:
        """Up to ``max_messages`` events, waiting at most ``timeout`` seconds for them."""
        ...

    def headers(self, message: SourceMessage) -> Headers:
        """The message's headers for its dead letter; headers the client cannot read are replaced
        by one that says so, never raised."""
        ...

    def pause(self, partitions: list[TopicPartition]) -> None:
        """Stop fetching these partitions; ``poll`` goes on serving the group."""

    def resume(self, partitions: list[TopicPartition]) -> None:
        """Fetch these partitions again, from the position after the last event handed out."""

    def commit(self, positions: Mapping[TopicPartition, int], asynchronous: bool) -> None:
        """Commit next-offset positions; a synchronous commit raises BrokerError on failure."""

    def seek(self, positions: Mapping[TopicPartition, int]) -> None:
        """Fetch these partitions again from the given offsets (after an aborted transaction)."""

    def high_watermarks(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Latest known end offsets, without a broker round trip; unknown partitions left out."""
        ...

    def group_metadata(self) -> object:
        """The consumer group's metadata, which a transaction's offsets are committed under."""

    def close(self, timeout: float) -> None:
        """Leave the group (revoking what is owned) and release the client, waiting at most
        ``timeout`` seconds: past the session timeout the group notices the departure anyway."""


class Producer(Protocol):
    """Writes records to topics; ``on_delivery`` is called once per record from ``poll``/``flush``."""

    def start(self) -> None: ...

    def produce(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None,
                on_delivery: DeliveryCallback) -> None: ...

    def produce_many(self, topic: str, records: Iterable[tuple[bytes | None, bytes]],
                     on_delivery: DeliveryCallback) -> None:
        """``produce`` for a batch of (key, value) records without headers: the hot path."""

    def poll(self, timeout: float) -> None:
        """Serve delivery callbacks, waiting at most ``timeout`` seconds; raises on a fatal error."""

    def flush(self, timeout: float) -> int:
        """Wait for every record to be acknowledged; returns how many are still unacknowledged."""
        ...

    def close(self) -> None: ...


class Transactions(Protocol):
    """Exactly-once: outputs and consumed positions committed together. Raise TransactionAborted
    when the broker says to abort, DeliveryError when the producer cannot go on. Each call spends
    at most ``timeout`` seconds in all, retries included."""

    def begin_transaction(self) -> None: ...

    def commit_transaction(self, positions: Mapping[TopicPartition, int], group_metadata: object,
                           timeout: float) -> None:
        """Commit the open transaction's outputs together with these consumed positions."""

    def abort_transaction(self, timeout: float) -> None: ...


class DeadLetterSink(Protocol):
    """Receives the dead letters; acknowledges each once through ``on_delivery``, like a destination."""

    def write_dead_letters(self, letters: Sequence[DeadLetter], on_delivery: DeliveryCallback) -> None: ...

    def poll(self, timeout: float) -> None: ...

    def flush(self, timeout: float) -> int:
        ...


class Engine(Protocol):
    """Where events come from: a source, and the producer that writes to the same cluster (score
    topics and the dead-letter topic), transactional under exactly-once."""

    @property
    def source(self) -> Source: ...

    @property
    def producer(self) -> Producer: ...

    @property
    def transactions(self) -> Transactions | None:
        """The producer's transactions under exactly-once, else None."""

    @property
    def dead_letters(self) -> DeadLetterSink:
        """Where rejected events go (the dead-letter topic)."""
        ...

    def check(self, timeout: float) -> None:
        """The cluster answers and the topics the service writes exist; raises BrokerError."""


@runtime_checkable
class StreamApp(Protocol):
    """An engine that runs its own stream loop (a Faust application) around the scoring core, instead
    of serving the service's pipeline a source and a producer."""

    @property
    def totals(self) -> Totals:
        """What the stream did so far (consumed, scored, dead-lettered, decisions)."""
        ...

    @property
    def assigned(self) -> int:
        """Source partitions owned now."""
        ...

    def check(self, timeout: float) -> None:
        """The cluster answers and the topics the service reads and writes exist; raises BrokerError."""

    def run_stream(self, spec: ScoringSpec, runner: ModelRunner, metrics: Metrics, health: Health,
                   stop: threading.Event) -> bool:
        """Consume, score and write until ``stop`` is set; True when the last work was committed."""
        ...
