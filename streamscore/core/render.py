"""Output records in one place: the score record of a scored event, the dead letter of a rejected one."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import repeat
from operator import methodcaller
from typing import Any

import numpy as np
import orjson

from streamscore.core.features import MISSING, NotAnObject
from streamscore.core.model import Stage
from streamscore.core.records import DeadLetter, Headers, Rejection, SourceMessage

DEAD_LETTER_SAMPLE_BYTES = 1024
"""An oversize event is dead-lettered with only this much of its value; headers locate the original."""


def score_records(
    messages: Sequence[SourceMessage],
    positions: list[int],
    rows: list[int],
    copied: list[tuple[str, list[Any]]],
    scores: np.ndarray,
    decisions: np.ndarray,
    labels: Sequence[str],
    model: tuple[str, str],
    now_ms: int,
    graph: tuple[Sequence[Stage], np.ndarray] | None = None,
) -> list[bytes]:
    """One JSON record per scored event (``rows`` index ``messages``, ``positions`` the ``copied``
    columns): the copied fields, score, decision, model name and version, source and times.

    ``graph`` (only when models are combined): the stages and the deciding stage of each record;
    the record then also carries ``"models"`` (name -> version of each model behind the deciding
    stage's score) and ``"stage"`` (its name), after ``model_version``.
    """
    name, version = model
    msgs = list(map(messages.__getitem__, rows))
    if any(_holes(column) for _, column in copied):  # a copied field absent somewhere: record by record
        return _score_records_sparse(msgs, positions, copied, scores, decisions, labels, model, now_ms, graph)
    keys = [n for n, _ in copied]
    columns: list[Iterable[Any]] = [map(column.__getitem__, positions) for _, column in copied]
    label_of = np.array(labels, dtype=object)
    keys += ["score", "decision", "model", "model_version"]
    columns += [scores.tolist(), label_of[decisions].tolist(), repeat(name), repeat(version)]
    if graph:
        stages = [graph[0][stage] for stage in graph[1].tolist()]
        keys += ["models", "stage"]
        columns += [[s.models for s in stages], [s.name for s in stages]]
    keys += ["source", "event_time_ms", "scored_at_ms"]
    columns += [[{"topic": m.topic(), "partition": m.partition(), "offset": m.offset()} for m in msgs],
                [ts if ts_type else None for ts_type, ts in map(_timestamp, msgs)], repeat(now_ms)]
    dumps = orjson.dumps
    return [dumps(dict(zip(keys, values, strict=True))) for values in zip(*columns, strict=False)]  # repeat()s


_timestamp = methodcaller("timestamp")
_HOLE_TYPES = frozenset({type(MISSING), NotAnObject})


def _holes(column: list[Any]) -> bool:
    """Whether a copied column holds a field some event lacks (one C-level pass over the types)."""
    return not _HOLE_TYPES.isdisjoint(map(type, column))


def _score_records_sparse(
    msgs: list[SourceMessage], positions: list[int], copied: list[tuple[str, list[Any]]], scores: np.ndarray,
    decisions: np.ndarray, labels: Sequence[str], model: tuple[str, str], now_ms: int,
    graph: tuple[Sequence[Stage], np.ndarray] | None,
) -> list[bytes]:
    """``score_records`` one record at a time, leaving out each copied field the event lacks."""
    name, version = model
    dumps = orjson.dumps
    stages = graph[1].tolist() if graph else [0] * len(msgs)
    out: list[bytes] = []
    for pos, msg, score, decision, stage in zip(positions, msgs, scores.tolist(), decisions.tolist(), stages,
                                                strict=True):
        record = {n: v for n, column in copied if (v := column[pos]) is not MISSING and type(v) is not NotAnObject}
        ts_type, ts = msg.timestamp()
        record["score"] = score
        record["decision"] = labels[decision]
        record["model"] = name
        record["model_version"] = version
        if graph:
            record["models"] = graph[0][stage].models
            record["stage"] = graph[0][stage].name
        record["source"] = {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()}
        record["event_time_ms"] = ts if ts_type else None
        record["scored_at_ms"] = now_ms
        out.append(dumps(record))
    return out


def shadow_records(
    messages: Sequence[SourceMessage],
    rows: list[int],
    scores: np.ndarray,
    decisions: np.ndarray,
    labels: Sequence[str],
    model: tuple[str, str],
    champion: tuple[np.ndarray, np.ndarray],
    now_ms: int,
) -> list[bytes]:
    """One shadow record per scored event: the shadow's score and decision (null where it failed on
    the row), the champion's beside them, the shadow model and version, source and time."""
    name, version = model
    dumps = orjson.dumps
    out: list[bytes] = []
    for row, score, decision, c_score, c_decision in zip(rows, scores.tolist(), decisions.tolist(),
                                                         champion[0].tolist(), champion[1].tolist(), strict=True):
        msg = messages[row]
        ok = math.isfinite(score)
        out.append(dumps({
            "score": score if ok else None, "decision": labels[decision] if ok else None,
            "model": name, "model_version": version,
            "champion": {"score": c_score, "decision": labels[c_decision]},
            "source": {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()},
            "scored_at_ms": now_ms,
        }))
    return out


def dead_letter(msg: SourceMessage, rejection: Rejection, headers: Headers, max_bytes: int, now_ms: int) -> DeadLetter:
    """The input's key, value and ``headers`` (as the engine could read them), plus the reason, the
    detail and where the input came from; a value over ``max_bytes`` keeps only its first KiB."""
    value = msg.value()
    headers = [
        *headers,
        ("streamscore.reason", str(rejection.reason).encode()),
        ("streamscore.detail", rejection.detail.encode()),
        ("streamscore.source.topic", str(msg.topic()).encode()),
        ("streamscore.source.partition", str(msg.partition()).encode()),
        ("streamscore.source.offset", str(msg.offset()).encode()),
        ("streamscore.time", str(now_ms).encode()),
    ]
    if value is not None and len(value) > max_bytes:
        headers.append(("streamscore.value.truncated.from", str(len(value)).encode()))
        value = value[:DEAD_LETTER_SAMPLE_BYTES]
    return DeadLetter(msg.key(), value, headers)
