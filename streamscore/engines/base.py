"""The small interface between the pipeline and a message broker."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from streamscore.records import Headers, SourceMessage

TopicPartition = tuple[str, int]
PartitionsCallback = Callable[[list[TopicPartition]], None]
DeliveryCallback = Callable[[object, object], None]


class Source(Protocol):
    """Consumes events of a consumer group and commits positions."""

    def subscribe(self, on_assign: PartitionsCallback, on_revoke: PartitionsCallback,
                  on_lost: PartitionsCallback) -> None:
        """Join the group; the callbacks run inside ``poll`` when the assignment changes."""

    def poll(self, max_messages: int, timeout: float) -> Sequence[SourceMessage]:
        """Up to ``max_messages`` events, waiting at most ``timeout`` seconds for them."""
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
        ``timeout`` seconds: past it the group notices the departure by the session timeout."""


class Sink(Protocol):
    """Writes records; ``on_delivery(err, msg)`` is called once per record from ``poll``/``flush``."""

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

    # exactly-once only: raise TransactionAborted when Kafka says to abort, DeliveryError when fatal
    def begin_transaction(self) -> None: ...

    def commit_transaction(self, positions: Mapping[TopicPartition, int], group_metadata: object) -> None:
        """Commit the open transaction's outputs together with these consumed positions."""

    def abort_transaction(self) -> None: ...

    def close(self) -> None: ...
