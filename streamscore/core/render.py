"""Output records in one place: the score record of a scored event, the dead letter of a rejected one."""

from __future__ import annotations

from collections.abc import Sequence
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

    Built from pre-encoded parts with one bytes format per record: what is the same for the whole
    batch (model, version, labels, scoring time) is encoded once; only values are encoded per record.

    ``graph`` (only when models are combined): the stages and the deciding stage of each record;
    the record then also carries ``"models"`` (name -> version of each model behind the deciding
    stage's score) and ``"stage"`` (its name), after ``model_version``.
    """
    dumps = orjson.dumps
    name, version = (dumps(part).replace(b"%", b"%%") for part in model)
    template = (b'{%b"score":%b,"decision":%b,"model":' + name + b',"model_version":' + version + b"%b"
                + b',"source":{"topic":%b,"partition":%d,"offset":%d},"event_time_ms":%b,"scored_at_ms":'
                + str(now_ms).encode() + b"}")
    label_parts = [dumps(label) for label in labels]
    fields = [(dumps(field) + b":", column) for field, column in dict(copied).items()]
    topics: dict[str | None, bytes] = {}
    stage_parts = [b',"models":' + dumps(s.models) + b',"stage":' + dumps(s.name) for s in graph[0]] if graph else []
    stages = graph[1].tolist() if graph else [0] * len(rows)
    out: list[bytes] = []
    for pos, row, score, decision, stage in zip(positions, rows, scores.tolist(), decisions.tolist(), stages,
                                                strict=True):
        msg = messages[row]
        head = b"".join([key + dumps(v) + b"," for key, column in fields
                         if (v := column[pos]) is not MISSING and type(v) is not NotAnObject]) if fields else b""
        topic = msg.topic()
        topic_part = topics.get(topic) or topics.setdefault(topic, dumps(topic))
        ts_type, ts = msg.timestamp()
        out.append(template % (head, dumps(score), label_parts[decision], stage_parts[stage] if graph else b"",
                               topic_part, msg.partition(), msg.offset(),
                               b"%d" % ts if ts_type else b"null"))
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
