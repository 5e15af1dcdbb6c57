"""Stateful (velocity) features: per key, how many events and how much of a field within a window of
event time, and the time since the key's previous event.

Pure: the state lives in a ``HistoryStore`` that the engine provides (Faust tables, backed by
changelog topics). Each key keeps its recent events as ``[offset, timestamp_ms, of-values...]``,
in offset order, per source partition. Updates are idempotent by offset: an event consumed again
after a crash (its offset not committed, its state already written) finds itself in the history and
gets the values it had the first time, computed from the entries up to its offset only.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from streamscore.config import FeatureSettings
from streamscore.core.features import MISSING, gather
from streamscore.core.records import SourceMessage

History = list[list[float]]
"""One key's recent events, in offset order: ``[offset, timestamp_ms, value of each summed path...]``."""

NO_PREVIOUS = -1.0
"""``since_last`` of a key's first event, when the feature gives no ``default``."""


class HistoryStore(Protocol):
    """Where histories are kept between batches. ``message`` is the event the read or write is for:
    the store keeps the state of its source partition."""

    def get(self, message: SourceMessage, key: str) -> History | None: ...

    def put(self, message: SourceMessage, key: str, history: History) -> None: ...


class StatefulFeatures(Protocol):
    """What the scorer calls: the stateful columns of a batch of valid events, by feature name."""

    def compute(self, messages: Sequence[SourceMessage], events: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
        ...


@dataclass(frozen=True, slots=True)
class _Aggregate:
    name: str
    kind: str
    window_ms: float
    value_column: int
    """For ``sum``: the history column of the summed path."""
    default: float


class _KeyGroup:
    """The stateful features that share one key path, and the history they share."""

    def __init__(self, key: str, specs: Sequence[FeatureSettings]) -> None:
        self.key = key
        self.of_paths = sorted({s.of for s in specs if s.of})
        self.aggregates = [
            _Aggregate(s.name, s.aggregate or "", (s.window_s or 0) * 1000.0,
                       2 + self.of_paths.index(s.of) if s.of else 0,
                       s.default if s.default is not None else NO_PREVIOUS)
            for s in specs
        ]
        self.retention_ms = max((a.window_ms for a in self.aggregates), default=0.0)


class VelocityFeatures:
    """Computes the stateful features of each batch and writes back what changed, once per key."""

    def __init__(self, specs: Sequence[FeatureSettings], store: HistoryStore, grace_s: float) -> None:
        by_key: dict[str, list[FeatureSettings]] = {}
        for spec in specs:
            assert spec.aggregate and spec.key, "only stateful features"
            by_key.setdefault(spec.key, []).append(spec)
        self.groups = [_KeyGroup(key, group) for key, group in by_key.items()]
        self.store = store
        self.grace_ms = grace_s * 1000.0

    def compute(self, messages: Sequence[SourceMessage], events: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
        """The columns for these events (valid ones: their key and summed fields were checked), in order."""
        out = {a.name: np.zeros(len(events), dtype=np.float32) for g in self.groups for a in g.aggregates}
        paths: dict[str, list[Any]] = {}
        for group in self.groups:
            keys = gather(events, group.key, paths)
            summed = [gather(events, path, paths) for path in group.of_paths]
            histories: dict[str, tuple[SourceMessage, History]] = {}
            changed: set[str] = set()
            for row, msg in enumerate(messages):
                name = f"{msg.topic()}/{msg.partition()}/{group.key}={keys[row]}"
                found = histories.get(name)
                history = found[1] if found else (self.store.get(msg, name) or [])
                entry = [float(msg.offset() or 0), float(msg.timestamp()[1]),
                         *(_number(values[row]) for values in summed)]
                if _insert(history, entry):
                    _prune(history, group.retention_ms + self.grace_ms)
                    changed.add(name)
                histories[name] = (msg, history)
                for aggregate in group.aggregates:
                    out[aggregate.name][row] = value_of(aggregate.kind, aggregate.window_ms, aggregate.value_column,
                                                        aggregate.default, history, entry)
            for name in changed:
                msg, history = histories[name]
                self.store.put(msg, name, history)
        return out


def _number(value: Any) -> float:
    return float(value) if value is not MISSING and value is not None else 0.0


def _insert(history: History, entry: list[float]) -> bool:
    """Add the entry in offset order; False when its offset is already there (consumed again)."""
    offsets = [e[0] for e in history]
    at = bisect.bisect_left(offsets, entry[0])
    if at < len(history) and history[at][0] == entry[0]:
        return False
    history.insert(at, entry)
    return True


def _prune(history: History, keep_ms: float) -> None:
    """Drop entries older than ``keep_ms`` before the newest timestamp, always keeping the last one."""
    newest = max(e[1] for e in history)
    while len(history) > 1 and history[0][1] <= newest - keep_ms:
        del history[0]


def value_of(kind: str, window_ms: float, column: int, default: float, history: History, entry: list[float]) -> float:
    """One feature of the event ``entry`` from the entries at or before its offset."""
    offset, ts = entry[0], entry[1]
    upto = [e for e in history if e[0] <= offset]
    if kind == "since_last":
        earlier = [e for e in upto if e[0] < offset]
        return (ts - earlier[-1][1]) / 1000.0 if earlier else default
    window = [e for e in upto if ts - window_ms < e[1] <= ts]
    if kind == "count":
        return float(len(window))
    return math.fsum(e[column] for e in window)
