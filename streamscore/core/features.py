"""Decoded JSON events -> one float32 matrix, column by column, with a reason for each bad row.

Pure: no Kafka, no model. Each feature is extracted for the whole batch at once: the values are
gathered with one comprehension, checked by the set of their types (the common case, every value
of the right type, costs one ``set(map(type, ...))``), and converted with one numpy call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

from streamscore.config import FeatureSettings
from streamscore.core.records import Reason

MISSING: Any = object()
"""Stands for a field absent from the event (JSON null counts as absent too)."""
_ABSENT_TYPES = frozenset({type(MISSING), type(None)})


@dataclass(frozen=True, slots=True)
class NotAnObject:
    """Stands for a field under a path step that is present but not an object (``card: 5`` for ``card.id``)."""

    path: str
    """The step that is not an object."""
    json_type: str


_ACCEPTED: dict[str, frozenset[type]] = {
    "float": frozenset({int, float}),
    "int": frozenset({int}),
    "bool": frozenset({bool}),
    "category": frozenset({str}),
}


def gather(events: Sequence[Any], path: str, cache: dict[str, list[Any]]) -> list[Any]:
    """The value at a dotted path for every event (MISSING where any step is absent, a
    ``NotAnObject`` where a step is present but not an object).

    Each path level is read once per batch, with ``dict.get`` mapped over the level's objects (a
    comprehension only where a step is absent or not an object), and shared through ``cache`` by
    every feature and output field under the same prefix (``card.id``, ``card.age``).
    """
    found = cache.get(path)
    if found is not None:
        return found
    parent, _, leaf = path.rpartition(".")
    nodes = gather(events, parent, cache) if parent else events
    if parent and not _DICT_ONLY.issuperset(map(type, nodes)):  # a step absent or not an object somewhere
        found = [
            n.get(leaf, MISSING) if type(n) is dict else MISSING if n is MISSING or n is None else _below(n, parent)
            for n in nodes
        ]
    else:  # every node an object: dict.get mapped at C level, no bytecode per event
        found = list(map(dict.get, nodes, repeat(leaf, len(nodes)), repeat(MISSING, len(nodes))))
    cache[path] = found
    return found


_DICT_ONLY = frozenset({dict})


def _below(node: Any, path: str) -> NotAnObject:
    """What lies under ``node``, present at ``path`` but neither an object nor absent."""
    return node if type(node) is NotAnObject else NotAnObject(path, json_type(node))


@dataclass(frozen=True, slots=True)
class Extraction:
    """The feature matrix of a batch; rows whose ``reasons`` entry is not None are invalid."""

    matrix: np.ndarray
    reasons: list[tuple[Reason, str] | None]
    """Per row: None, or (reason code, detail) such as ("wrong_type", "amount: expected float, got string")."""

    @property
    def valid(self) -> np.ndarray:
        return np.fromiter((r is None for r in self.reasons), dtype=bool, count=len(self.reasons))


class _Column:
    """One feature: where it comes from, what it accepts, which matrix columns it fills."""

    def __init__(self, spec: FeatureSettings, offset: int) -> None:
        self.spec = spec
        self.offset = offset
        self.accepted = _ACCEPTED[spec.dtype]
        self.index = {c: float(i) for i, c in enumerate(spec.categories)}
        self.default = spec.default

    def fill(self, values: list[Any], out: np.ndarray, reasons: list[tuple[Reason, str] | None]) -> None:
        types = set(map(type, values))
        if not types <= self.accepted:
            if not self.spec.required and types <= self.accepted | _ABSENT_TYPES:
                fallback = self.default if self.default is not None else ""
                values = [fallback if v is MISSING or v is None else v for v in values]
            else:
                values = self._repair(values, reasons)
        if self.spec.dtype == "category":
            self._fill_category(values, out)
            return
        try:
            column = np.fromiter(values, dtype=np.float64, count=len(values))
        except OverflowError:  # an integer beyond float64: rare, so convert row by row
            column = np.array([_to_float(v) for v in values], dtype=np.float64)
        with np.errstate(over="ignore"):  # beyond float32's range becomes inf, caught just below
            column32 = column.astype(np.float32)
        finite = np.isfinite(column32)
        if not finite.all():
            for row in np.flatnonzero(~finite):
                _reject(reasons, int(row), Reason.NON_FINITE, f"{self.spec.field_path}: not a finite float32 number")
            column32[~finite] = 0.0
        out[:, self.offset] = column32

    def _fill_category(self, values: list[Any], out: np.ndarray) -> None:
        if self.spec.encoding == "index":
            unknown = self.spec.unknown_value
            get = self.index.get
            out[:, self.offset] = np.array([get(v, unknown) for v in values], dtype=np.float32)
            return
        get = self.index.get
        positions = np.array([get(v, -1.0) for v in values], dtype=np.int64)
        known = np.flatnonzero(positions >= 0)
        out[known, self.offset + positions[known]] = 1.0

    def _repair(self, values: list[Any], reasons: list[tuple[Reason, str] | None]) -> list[Any]:
        """The slow path: default the missing values, reject the ill-typed ones row by row."""
        path, expected = self.spec.field_path, self.spec.dtype
        fallback = self.default if self.default is not None else ""
        placeholder: Any = "" if expected == "category" else 0
        repaired: list[Any] = []
        for row, value in enumerate(values):
            if value is MISSING or value is None:
                if self.spec.required:
                    _reject(reasons, row, Reason.MISSING_FIELD, f"{path}: required field is missing")
                    repaired.append(placeholder)
                else:
                    repaired.append(fallback)
            elif type(value) in self.accepted or (expected == "int" and type(value) is float and value.is_integer()):
                repaired.append(value)
            elif type(value) is NotAnObject:
                detail = f"{path}: expected an object at {value.path}, got {value.json_type}"
                _reject(reasons, row, Reason.WRONG_TYPE, detail)
                repaired.append(placeholder)
            else:
                _reject(reasons, row, Reason.WRONG_TYPE, f"{path}: expected {expected}, got {json_type(value)}")
                repaired.append(placeholder)
        return repaired


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except OverflowError:
        return float("inf")


def _reject(reasons: list[tuple[Reason, str] | None], row: int, code: Reason, detail: str) -> None:
    if reasons[row] is None:
        reasons[row] = (code, detail)


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for reasons users read."""
    return {
        bool: "bool", int: "int", float: "float", str: "string", list: "array", dict: "object", type(None): "null"
    }.get(type(value), type(value).__name__)


class _StateColumn:
    """A stateful feature: its value comes from the engine's state (``core.velocity``); here only the
    fields it is computed from are checked, the key (a string or an integer) and the summed number."""

    def __init__(self, spec: FeatureSettings, offset: int) -> None:
        self.spec = spec
        self.offset = offset
        self.checks = [(spec.key or "", _KEY_TYPES, "string or int")]
        if spec.of:
            self.checks.append((spec.of, _ACCEPTED["float"], "float"))

    def check(self, events: Sequence[Any], cache: dict[str, list[Any]], reasons: list[tuple[Reason, str] | None]
              ) -> None:
        for path, accepted, expected in self.checks:
            values = gather(events, path, cache)
            if set(map(type, values)) <= accepted:
                continue
            for row, value in enumerate(values):
                if value is MISSING or value is None:
                    _reject(reasons, row, Reason.MISSING_FIELD, f"{path}: required field is missing")
                elif type(value) is NotAnObject:
                    _reject(reasons, row, Reason.WRONG_TYPE,
                            f"{path}: expected an object at {value.path}, got {value.json_type}")
                elif type(value) not in accepted:
                    _reject(reasons, row, Reason.WRONG_TYPE, f"{path}: expected {expected}, got {json_type(value)}")


_KEY_TYPES = frozenset({str, int})


class FeatureExtractor:
    """Turns a batch of decoded events into the model's float32 input matrix; the columns of stateful
    features are left at zero, for the scorer to fill from the engine's state (``offsets``)."""

    def __init__(self, specs: Sequence[FeatureSettings]) -> None:
        self.columns: list[_Column] = []
        self.stateful: list[_StateColumn] = []
        offset = 0
        for spec in specs:
            if spec.aggregate:
                self.stateful.append(_StateColumn(spec, offset))
            else:
                self.columns.append(_Column(spec, offset))
            offset += spec.width
        self.width = offset
        self.specs = list(specs)
        self.offsets = {c.spec.name: c.offset for c in self.stateful}
        """Matrix column of each stateful feature."""

    @property
    def column_names(self) -> list[str]:
        names: list[str] = []
        for spec in self.specs:
            if spec.width == 1:
                names.append(spec.name)
            else:
                names.extend(f"{spec.name}={c}" for c in spec.categories)
        return names

    def extract(self, events: Sequence[dict[str, Any]], cache: dict[str, list[Any]] | None = None) -> Extraction:
        """Extract every feature of every event; never raises on bad values.

        ``cache`` (path -> values) may be shared with later readers of the same events.
        """
        cache = {} if cache is None else cache
        matrix = np.zeros((len(events), self.width), dtype=np.float32)
        reasons: list[tuple[Reason, str] | None] = [None] * len(events)
        for column in self.columns:
            column.fill(gather(events, column.spec.field_path, cache), matrix, reasons)
        for state in self.stateful:
            state.check(events, cache, reasons)
        return Extraction(matrix, reasons)
