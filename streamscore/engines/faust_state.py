"""The Faust engine's side of the scoring core: its events as ``SourceMessage`` objects, and the
table that keeps the histories of stateful features (``core.velocity.HistoryStore``)."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from streamscore.core.records import Headers
from streamscore.core.velocity import History

log = logging.getLogger(__name__)


def store_url(store: str) -> str:
    """The Faust store URL for ``faust.store``: RocksDB through rocksdict when it is installed (``auto``)."""
    if store == "auto":
        store = "rocksdb" if importlib.util.find_spec("rocksdict") else "memory"
    return f"{store}://"


class FaustMessage:
    """A Faust event as the scoring core reads it (the ``SourceMessage`` protocol)."""

    __slots__ = ("event", "message")

    def __init__(self, event: Any) -> None:
        self.event = event
        self.message = event.message

    def topic(self) -> str | None:
        return str(self.message.topic)

    def partition(self) -> int | None:
        return int(self.message.partition)

    def offset(self) -> int | None:
        return int(self.message.offset)

    def key(self) -> bytes | None:
        key = self.message.key
        return None if key is None else bytes(key)

    def value(self) -> bytes | None:
        value = self.message.value
        return None if value is None else bytes(value)

    def headers(self) -> Headers | None:
        headers = self.message.headers
        if not headers:
            return None
        items = headers.items() if hasattr(headers, "items") else headers
        return [(str(name), None if value is None else bytes(value)) for name, value in items]

    def timestamp(self) -> tuple[int, int]:
        ts = self.message.timestamp
        return (int(self.message.timestamp_type) + 1, int(ts * 1000)) if ts else (0, 0)


class TableStore:
    """Histories in a Faust table: read and written in the store of the event's source partition,
    each write also sent to the table's changelog topic (same partition), whose acknowledgement the
    engine awaits with the window's outputs (``take_pending``) before acknowledging its events."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.stream: Any = None
        """The agent's stream: the store of a partition is chosen by the stream's current event."""
        self._pending: list[Any] = []

    def get(self, message: Any, key: str) -> History | None:
        self._focus(message)
        value = self.table.data.get(key)
        return None if value is None else list(value)

    def put(self, message: Any, key: str, history: History) -> None:
        self._focus(message)
        self.table.data[key] = history
        self._pending.append(self.table.send_changelog(message.partition(), key, history))

    def take_pending(self) -> list[Any]:
        """The changelog writes since the last call (futures resolved when the broker acknowledges them)."""
        pending, self._pending = self._pending, []
        return pending

    def _focus(self, message: Any) -> None:
        self.stream._set_current_event(message.event)
