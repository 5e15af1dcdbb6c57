"""Scoring core: decode reasons, model-failure isolation by bisection, one result per message."""

from __future__ import annotations

import numpy as np
import orjson
from hypothesis import given
from hypothesis import strategies as st

from streamscore.scoring import decode, predict_isolating
from tests.unit.test_pipeline import EVENT, FirstColumnRunner, Message, settings

MARK = 666.0


class RaisesOnMark(FirstColumnRunner):
    calls = 0

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        self.calls += 1
        if (matrix[:, 0] == MARK).any():
            raise RuntimeError("bad row")
        return matrix[:, 0] / 1000


def test_decode_reasons() -> None:
    events, rejections = decode([b'{"a": 1}', None, b"x" * 11, b"{nope", b"[1]", b'{"a": NaN}'], max_bytes=10)
    assert events[0] == {"a": 1} and events[1:] == [None] * 5
    assert [(r.index, r.reason) for r in rejections] == [
        (1, "empty"), (2, "oversize"), (3, "malformed_json"), (4, "not_an_object"), (5, "non_finite")]


@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1)))))
def test_bisection_isolates_exactly_the_failing_rows(case: tuple[int, set[int]]) -> None:
    rows, bad = case
    matrix = np.arange(rows, dtype=np.float32).reshape(rows, 1) + 1
    for row in bad:
        matrix[row, 0] = MARK
    runner = RaisesOnMark()
    scores, failed = predict_isolating(runner, matrix)
    assert set(failed) == bad
    good = [r for r in range(rows) if r not in bad]
    np.testing.assert_allclose(scores[good], matrix[good, 0] / 1000)
    assert np.isnan(scores[list(bad)]).all()
    assert runner.calls <= 1 + 2 * max(1, len(bad)) * max(1, rows.bit_length()), "bisection, not row by row"


def test_every_message_is_scored_or_rejected_once_with_the_output_record() -> None:
    from streamscore.scoring import Scorer

    s = settings()
    msgs = [Message("in", 0, i, orjson.dumps({**EVENT, "transaction_id": f"t{i}"})) for i in range(10)]
    msgs[4] = Message("in", 0, 4, b"[]")
    result = Scorer(s, FirstColumnRunner()).score(msgs)
    assert sorted(result.scored + [r.index for r in result.rejections]) == list(range(10))
    record = orjson.loads(result.outputs[0])
    assert record == {"transaction_id": "t0", "amount": 10.0, "score": 0.0, "decision": "approve",
                      "model": "fake", "model_version": "1", "source": {"topic": "in", "partition": 0, "offset": 0},
                      "event_time_ms": 1_700_000_000_000, "scored_at_ms": record["scored_at_ms"]}
