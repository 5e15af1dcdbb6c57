"""Score records built from pre-encoded parts are exactly the JSON the record describes."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from hypothesis import given
from hypothesis import strategies as st

from streamscore.core.features import MISSING, NotAnObject
from streamscore.core.render import score_records
from tests.unit.fakes import Message

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


@given(
    rows=st.lists(st.tuples(json_values | st.just(MISSING) | st.just(NotAnObject("card", "number")),
                            st.floats(0, 1, width=32), st.integers(0, 2), st.text(min_size=1, max_size=8),
                            st.integers(0, 99), st.integers(0, 2**40), st.booleans()), max_size=6),
    name=st.text(max_size=10), version=st.text(max_size=10),
)
def test_records_decode_to_the_fields_in_order(rows: list[tuple[Any, ...]], name: str, version: str) -> None:
    labels = ["approve", "review", "reject"]
    messages = [Message(topic, p, o, None, timestamp=(1, 1_700_000_000_000) if has_ts else (0, -1))
                for _, _, _, topic, p, o, has_ts in rows]
    column = [value for value, *_ in rows]
    scores = np.array([score for _, score, *_ in rows], dtype=np.float32)
    decisions = np.array([d for _, _, d, *_ in rows], dtype=np.int64)
    positions = list(range(len(rows)))
    records = score_records(messages, positions, positions, [("card.id", column)], scores, decisions, labels,
                            (name, version), 123)
    for record, (value, _, d, topic, p, o, has_ts), score in zip(records, rows, scores.tolist(), strict=True):
        expected: dict[str, Any] = {} if value is MISSING or isinstance(value, NotAnObject) else {"card.id": value}
        expected |= {"score": score, "decision": labels[d], "model": name, "model_version": version,
                     "source": {"topic": topic, "partition": p, "offset": o},
                     "event_time_ms": 1_700_000_000_000 if has_ts else None, "scored_at_ms": 123}
        assert record == orjson.dumps(expected), "the same bytes as encoding the whole record"
