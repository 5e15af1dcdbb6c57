"""Decision policy: ordered thresholds, inclusive at min_score, NaN fails closed, vectorised."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscore.config import DecisionRule, DecisionSettings
from streamscore.core.decisions import DecisionPolicy


@pytest.fixture
def make_policy() -> Callable[..., DecisionPolicy]:
    def make(default: str = "approve", rules: Sequence[tuple[str, float]] = (("review", 0.5), ("reject", 0.85))
             ) -> DecisionPolicy:
        return DecisionPolicy(DecisionSettings(
            default=default, rules=[DecisionRule(label=label, min_score=m) for label, m in rules]))

    return make


def reference(default: str, rules: Sequence[tuple[str, float]], score: float) -> str:
    """One score, the obvious way: the last rule reached, NaN reaches them all."""
    label = default
    for rule_label, min_score in rules:
        if math.isnan(score) or score >= min_score:
            label = rule_label
    return label


def test_labels_are_the_default_then_the_rules_in_order(make_policy: Callable[..., DecisionPolicy]) -> None:
    assert make_policy().labels == ["approve", "review", "reject"]


def test_thresholds_are_inclusive_and_the_default_is_below_all(make_policy: Callable[..., DecisionPolicy]) -> None:
    policy = make_policy()
    scores = np.array([0.0, np.nextafter(0.5, 0), 0.5, np.nextafter(0.85, 0), 0.85, 1.0], dtype=np.float64)
    assert policy.decide(scores) == ["approve", "approve", "review", "review", "reject", "reject"]
    assert policy.indices(scores).tolist() == [0, 0, 1, 1, 2, 2]


def test_infinities_and_negative_scores(make_policy: Callable[..., DecisionPolicy]) -> None:
    policy = make_policy()
    assert policy.decide(np.array([-np.inf, -3.0, np.inf])) == ["approve", "approve", "reject"]


def test_nan_takes_the_highest_label(make_policy: Callable[..., DecisionPolicy]) -> None:
    policy = make_policy()
    assert policy.decide(np.array([np.nan, 0.1, np.nan], dtype=np.float32)) == ["reject", "approve", "reject"]


def test_float32_scores_are_compared_as_they_are(make_policy: Callable[..., DecisionPolicy]) -> None:
    policy = make_policy(rules=[("review", 0.5), ("reject", 0.85)])
    # float32(0.85) is 0.85000002..., so it reaches the rule; the float32 just below 0.85 does not
    below = np.nextafter(np.float32(0.85), np.float32(0))
    assert policy.decide(np.array([0.85, below], dtype=np.float32)) == ["reject", "review"]


def test_no_rules_means_the_default_for_everything(make_policy: Callable[..., DecisionPolicy]) -> None:
    policy = make_policy(default="ok", rules=[])
    assert policy.labels == ["ok"]
    assert policy.decide(np.array([-1.0, 0.0, 0.99, np.inf, np.nan])) == ["ok"] * 5


def test_a_single_rule_and_negative_thresholds(make_policy: Callable[..., DecisionPolicy]) -> None:
    policy = make_policy(default="low", rules=[("mid", -1.0), ("high", 0.0)])
    assert policy.decide(np.array([-1.5, -1.0, -0.5, 0.0, np.nan])) == ["low", "mid", "mid", "high", "high"]
    assert make_policy(default="a", rules=[("b", 0.3)]).decide(np.array([0.3, 0.29])) == ["b", "a"]


def test_empty_batch_and_plain_lists(make_policy: Callable[..., DecisionPolicy]) -> None:
    policy = make_policy()
    assert policy.decide(np.zeros(0, dtype=np.float32)) == []
    assert policy.indices(np.zeros(0)).shape == (0,)
    assert policy.decide([0.2, 0.9]) == ["approve", "reject"]  # type: ignore[arg-type]


def test_the_callers_scores_are_not_modified(make_policy: Callable[..., DecisionPolicy]) -> None:
    scores = np.array([np.nan, 0.7])
    make_policy().indices(scores)
    assert np.isnan(scores[0]) and scores[1] == 0.7


THRESHOLDS = st.lists(st.floats(-10, 10, allow_nan=False), max_size=5, unique=True).map(sorted)
SCORES32 = st.floats(allow_nan=True, allow_infinity=True, width=32)
SCORES64 = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-10, 10))


@settings(max_examples=300, deadline=None)
@given(thresholds=THRESHOLDS, data=st.data())
def test_vectorised_result_equals_the_scalar_reference(thresholds: list[float], data: st.DataObject) -> None:
    rules = [(f"r{i}", t) for i, t in enumerate(thresholds)]
    policy = DecisionPolicy(DecisionSettings(default="d", rules=[DecisionRule(label=lbl, min_score=t)
                                                                 for lbl, t in rules]))
    # scores at, just below and just above each threshold, plus anything at all
    near = st.sampled_from(thresholds).flatmap(
        lambda t: st.sampled_from([t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf)])) if thresholds else SCORES64
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    values = data.draw(st.lists(st.one_of(SCORES32, SCORES64, near), max_size=60))
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, a score like any other
        scores = np.array(values, dtype=np.float64).astype(dtype)
    assert policy.decide(scores) == [reference("d", rules, float(s)) for s in scores]
    assert policy.indices(scores).tolist() == [policy.labels.index(reference("d", rules, float(s))) for s in scores]
