"""Decision policy: ordered thresholds, inclusive at min_score, vectorised."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from streamscore.config import DecisionRule, DecisionSettings
from streamscore.decisions import DecisionPolicy

POLICY = DecisionPolicy(DecisionSettings(default="approve", rules=[
    DecisionRule(label="review", min_score=0.5), DecisionRule(label="reject", min_score=0.85)]))


def reference(score: float) -> str:
    if math.isnan(score):
        return "reject"
    if score >= 0.85:
        return "reject"
    if score >= 0.5:
        return "review"
    return "approve"


def test_thresholds_are_inclusive_and_nan_fails_closed() -> None:
    scores = np.array([0.0, 0.4999, 0.5, 0.84, 0.85, 1.0, np.nan], dtype=np.float32)
    assert POLICY.decide(scores) == ["approve", "approve", "review", "review", "reject", "reject", "reject"]


def test_no_rules_means_default_for_all() -> None:
    policy = DecisionPolicy(DecisionSettings(default="ok", rules=[]))
    assert policy.decide(np.array([0.0, 0.99])) == ["ok", "ok"]


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=200))
def test_vectorised_equals_scalar_reference(scores: list[float]) -> None:
    array = np.array(scores, dtype=np.float32)
    assert POLICY.decide(array) == [reference(float(s)) for s in array]
