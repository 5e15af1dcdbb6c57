"""The per-event work every peer does, written once so the comparison is fair: decode, features,
model, decision, output record or dead letter.

Only numpy, orjson and onnxruntime: the peers' environments have no streamscore (Quix Streams pins
a confluent-kafka that streamscore refuses). The job file, written by the driver from streamscore's
own settings (``load.peers.job``), carries the feature spec, the decisions, the copied fields and
the model; the code below mirrors ``streamscore.core`` (decode, features, decisions, render):
- decode: empty or over ``max_bytes`` -> dead letter; ``orjson.loads``; not an object -> dead letter
  (streamscore's nesting-depth check is left out: the synthetic events never nest that deep);
- features, column by column over the batch: a dotted path read once per level, the type set of
  the column checked with one ``set(map(type, ...))``, the slow row-by-row path only when a type
  is off (missing required field, wrong type); one-hot and index categories; non-finite -> reject;
- the model on the whole batch (one ``session.run``), column ``score_column`` of ``score_output``;
- decisions by ordered thresholds (``numpy.searchsorted``);
- one JSON score record per event (copied fields, score, decision, model, version, source, times),
  keyed like the input; a dead letter keeps the input's key and value (its first KiB if oversize)
  and says why in headers.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson

Item = tuple[Any, Any, str, int, int, Any]
"""One input message: key, value, topic, partition, offset, timestamp in ms (None if unknown)."""

Output = tuple[bool, Any, bytes, list[tuple[str, bytes]]]
"""One output: scored (True) or dead letter (False), key, value, headers."""

MISSING: Any = object()
_ACCEPTED: dict[str, set[type]] = {"float": {int, float}, "int": {int}, "bool": {bool}, "category": {str}}
_ABSENT = {type(MISSING), type(None)}
_SAMPLE_BYTES = 1024


@dataclass(frozen=True, slots=True)
class _Column:
    path: str
    dtype: str
    offset: int
    required: bool
    default: Any
    encoding: str | None
    index: dict[str, float]
    unknown_value: float


class Scorer:
    """Built from a job file; ``score(items)`` returns one output per item, in order."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.columns: list[_Column] = []
        offset = 0
        for f in job["features"]:
            categories = f.get("categories") or []
            self.columns.append(_Column(f["path"], f["dtype"], offset, f["required"], f.get("default"),
                                        f.get("encoding"), {c: float(i) for i, c in enumerate(categories)},
                                        f.get("unknown_value", -1.0)))
            offset += f["width"]
        self.width = offset
        self.labels: list[str] = [job["decisions"]["default"], *(r["label"] for r in job["decisions"]["rules"])]
        self.thresholds = np.array([r["min_score"] for r in job["decisions"]["rules"]], dtype=np.float64)
        self.copy_fields: list[str] = job["copy_fields"]
        self.max_bytes: int = job["max_bytes"]
        model = job["model"]
        options = ort.SessionOptions()
        # streamscore's thread count: the same work, and the same sums (a tree ensemble on several
        # threads adds its trees in another order, so the scores differ in the last float32 bits)
        if model.get("intra_op_threads"):
            options.intra_op_num_threads = model["intra_op_threads"]
        self.session = ort.InferenceSession(model["path"], options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.output, self.column = model["score_output"], model["score_column"]
        self.model = (model["name"], model["version"])

    @classmethod
    def from_file(cls, path: str | Path) -> Scorer:
        return cls(json.loads(Path(path).read_text()))

    def score(self, items: list[Item]) -> list[Output]:
        now_ms = int(time.time() * 1000)
        outputs: list[Output | None] = [None] * len(items)
        events: list[dict[str, Any]] = []
        rows: list[int] = []
        loads = orjson.loads
        for i, item in enumerate(items):
            value = item[1]
            if not value:
                outputs[i] = self._dead(item, "empty", "value is empty", now_ms)
            elif len(value) > self.max_bytes:
                outputs[i] = self._dead(item, "oversize", f"{len(value)} bytes", now_ms)
            else:
                try:
                    event = loads(value)
                except orjson.JSONDecodeError as exc:
                    outputs[i] = self._dead(item, "malformed_json", str(exc)[:200], now_ms)
                    continue
                if type(event) is not dict:
                    outputs[i] = self._dead(item, "not_an_object", "expected an object", now_ms)
                else:
                    events.append(event)
                    rows.append(i)
        cache: dict[str, list[Any]] = {}
        matrix, reasons = self._features(events, cache)
        keep = [n for n, r in enumerate(reasons) if r is None]
        for n, reason in enumerate(reasons):
            if reason is not None:
                outputs[rows[n]] = self._dead(items[rows[n]], reason[0], reason[1], now_ms)
        if keep:
            if len(keep) != len(events):
                matrix = matrix[keep]
            (out,) = self.session.run([self.output], {self.input: matrix})
            scores = out[:, self.column] if out.ndim == 2 else out
            self._render(items, rows, keep, cache, events, scores, outputs, now_ms)
        return outputs  # type: ignore[return-value]

    def score_one(self, item: Item) -> Output:
        """One event, for a per-message peer: the same checks and record as ``score([item])``, with
        the features built in plain Python (one row) instead of column by column."""
        now_ms = int(time.time() * 1000)
        value = item[1]
        if not value:
            return self._dead(item, "empty", "value is empty", now_ms)
        if len(value) > self.max_bytes:
            return self._dead(item, "oversize", f"{len(value)} bytes", now_ms)
        try:
            event = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            return self._dead(item, "malformed_json", str(exc)[:200], now_ms)
        if type(event) is not dict:
            return self._dead(item, "not_an_object", "expected an object", now_ms)
        row = [0.0] * self.width
        for column in self.columns:
            reason = _put(column, _lookup(event, column.path), row)
            if reason is not None:
                return self._dead(item, reason[0], reason[1], now_ms)
        (out,) = self.session.run([self.output], {self.input: np.array([row], dtype=np.float32)})
        score = float(out[0, self.column] if out.ndim == 2 else out[0])
        record = {f: v for f in self.copy_fields
                  if (v := _lookup(event, f)) is not MISSING and type(v) is not _NotObject}
        record["score"] = score
        record["decision"] = self.labels[int(np.searchsorted(self.thresholds, score, side="right"))]
        record["model"], record["model_version"] = self.model
        record["source"] = {"topic": item[2], "partition": item[3], "offset": item[4]}
        record["event_time_ms"] = item[5]
        record["scored_at_ms"] = now_ms
        return (True, item[0], orjson.dumps(record), [])

    def _render(self, items: list[Item], rows: list[int], keep: list[int], cache: dict[str, list[Any]],
                events: list[dict[str, Any]], scores: np.ndarray, outputs: list[Output | None], now_ms: int) -> None:
        decisions = np.searchsorted(self.thresholds, scores.astype(np.float64), side="right").tolist()
        copied = [(name, _gather(events, name, cache)) for name in self.copy_fields]
        name, version = self.model
        labels, dumps = self.labels, orjson.dumps
        for n, score, decision in zip(keep, scores.tolist(), decisions, strict=True):
            item = items[rows[n]]
            record = {f: v for f, column in copied if (v := column[n]) is not MISSING and type(v) is not _NotObject}
            record["score"] = score
            record["decision"] = labels[decision]
            record["model"] = name
            record["model_version"] = version
            record["source"] = {"topic": item[2], "partition": item[3], "offset": item[4]}
            record["event_time_ms"] = item[5]
            record["scored_at_ms"] = now_ms
            outputs[rows[n]] = (True, item[0], dumps(record), [])

    def _dead(self, item: Item, reason: str, detail: str, now_ms: int) -> Output:
        value = item[1] or b""
        headers = [("streamscore.reason", reason.encode()), ("streamscore.detail", detail.encode()),
                   ("streamscore.source.topic", item[2].encode()),
                   ("streamscore.source.partition", str(item[3]).encode()),
                   ("streamscore.source.offset", str(item[4]).encode()), ("streamscore.time", str(now_ms).encode())]
        if len(value) > self.max_bytes:
            value = value[:_SAMPLE_BYTES]
        return (False, item[0], value, headers)

    def _features(self, events: list[dict[str, Any]],
                  cache: dict[str, list[Any]]) -> tuple[np.ndarray, list[tuple[str, str] | None]]:
        matrix = np.zeros((len(events), self.width), dtype=np.float32)
        reasons: list[tuple[str, str] | None] = [None] * len(events)
        for column in self.columns:
            _fill(column, _gather(events, column.path, cache), matrix, reasons)
        return matrix, reasons


@dataclass(frozen=True, slots=True)
class _NotObject:
    path: str


def _gather(events: list[dict[str, Any]], path: str, cache: dict[str, list[Any]]) -> list[Any]:
    found = cache.get(path)
    if found is not None:
        return found
    parent, _, leaf = path.rpartition(".")
    if parent:
        found = [n.get(leaf, MISSING) if type(n) is dict else MISSING if n is MISSING or n is None
                 else (n if type(n) is _NotObject else _NotObject(parent))
                 for n in _gather(events, parent, cache)]
    else:
        found = [e.get(leaf, MISSING) for e in events]
    cache[path] = found
    return found


_FLOAT32_LIMIT = 3.4028235677973366e38
"""Doubles at or beyond this magnitude round to an infinite float32."""


def _lookup(event: dict[str, Any], path: str) -> Any:
    """The value at a dotted path of one event: MISSING if a step is absent, ``_NotObject`` if a
    step is present but not an object."""
    node: Any = event
    walked = ""
    for step in path.split("."):
        if node is MISSING or node is None:
            return MISSING
        if type(node) is not dict:
            return _NotObject(walked)
        node = node.get(step, MISSING)
        walked = f"{walked}.{step}" if walked else step
    return node


def _put(column: _Column, value: Any, row: list[float]) -> tuple[str, str] | None:
    """Write one feature of one event into ``row``; a reason when the event must be rejected."""
    kind = type(value)
    if kind not in _ACCEPTED[column.dtype]:
        if value is MISSING or value is None:
            if column.required:
                return ("missing_field", f"{column.path}: required field is missing")
            value = column.default if column.default is not None else ""
        elif not (column.dtype == "int" and kind is float and value.is_integer()):
            return ("wrong_type", f"{column.path}: expected {column.dtype}")
    if column.dtype == "category":
        if column.encoding == "index":
            row[column.offset] = column.index.get(value, column.unknown_value)
        elif (position := column.index.get(value)) is not None:
            row[column.offset + int(position)] = 1.0
        return None
    number = _to_float(value)
    if not -_FLOAT32_LIMIT < number < _FLOAT32_LIMIT:
        return ("non_finite", f"{column.path}: not a finite float32 number")
    row[column.offset] = number
    return None


def _fill(column: _Column, values: list[Any], out: np.ndarray, reasons: list[tuple[str, str] | None]) -> None:
    accepted = _ACCEPTED[column.dtype]
    types = set(map(type, values))
    if not types <= accepted:
        if not column.required and types <= accepted | _ABSENT:
            fallback = column.default if column.default is not None else ""
            values = [fallback if v is MISSING or v is None else v for v in values]
        else:
            values = _repair(column, values, reasons)
    if column.dtype == "category":
        get = column.index.get
        if column.encoding == "index":
            out[:, column.offset] = np.array([get(v, column.unknown_value) for v in values], dtype=np.float32)
        else:
            positions = np.array([get(v, -1.0) for v in values], dtype=np.int64)
            known = np.flatnonzero(positions >= 0)
            out[known, column.offset + positions[known]] = 1.0
        return
    try:
        floats = np.fromiter(values, dtype=np.float64, count=len(values))
    except OverflowError:
        floats = np.array([_to_float(v) for v in values], dtype=np.float64)
    with np.errstate(over="ignore"):
        floats32 = floats.astype(np.float32)
    finite = np.isfinite(floats32)
    if not finite.all():
        for row in np.flatnonzero(~finite).tolist():
            _reject(reasons, row, "non_finite", f"{column.path}: not a finite float32 number")
        floats32[~finite] = 0.0
    out[:, column.offset] = floats32


def _repair(column: _Column, values: list[Any], reasons: list[tuple[str, str] | None]) -> list[Any]:
    accepted = _ACCEPTED[column.dtype]
    fallback = column.default if column.default is not None else ""
    placeholder: Any = "" if column.dtype == "category" else 0
    repaired: list[Any] = []
    for row, value in enumerate(values):
        if value is MISSING or value is None:
            if column.required:
                _reject(reasons, row, "missing_field", f"{column.path}: required field is missing")
                repaired.append(placeholder)
            else:
                repaired.append(fallback)
        elif type(value) in accepted or (column.dtype == "int" and type(value) is float and value.is_integer()):
            repaired.append(value)
        else:
            _reject(reasons, row, "wrong_type", f"{column.path}: expected {column.dtype}")
            repaired.append(placeholder)
    return repaired


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except OverflowError:
        return float("inf")


def _reject(reasons: list[tuple[str, str] | None], row: int, code: str, detail: str) -> None:
    if reasons[row] is None:
        reasons[row] = (code, detail)
