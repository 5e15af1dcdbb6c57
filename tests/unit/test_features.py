"""Feature extraction: random events against a row-by-row reference implementation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscore.config import FeatureSettings
from streamscore.features import FeatureExtractor

SPECS = [
    FeatureSettings(name="amount", dtype="float"),
    FeatureSettings(name="age", path="card.age_days", dtype="int"),
    FeatureSettings(name="present", path="card.present", dtype="bool"),
    FeatureSettings(name="n1h", path="activity.counts.h1", dtype="int", required=False, default=0),
    FeatureSettings(name="cat", path="merchant.category", dtype="category", encoding="one_hot",
                    categories=["a", "b", "c"]),
    FeatureSettings(name="country", path="merchant.country", dtype="category", encoding="index",
                    categories=["US", "DE"], unknown_value=-1),
    FeatureSettings(name="risk", path="merchant.risk", dtype="float", required=False, default=0.5),
]

ABSENT = object()
ANY_VALUE = st.one_of(
    st.just(ABSENT), st.none(), st.booleans(), st.integers(-10**6, 10**6), st.integers(10**300, 10**400),
    st.floats(allow_nan=False), st.sampled_from(["a", "b", "c", "US", "DE", "JP", ""]), st.text(max_size=3),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


def put(event: dict[str, Any], path: str, value: Any) -> None:
    if value is ABSENT:
        return
    *parents, leaf = path.split(".")
    node = event
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            return
    node[leaf] = value


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {}
    for spec in SPECS:
        put(event, spec.field_path, draw(ANY_VALUE))
    if draw(st.booleans()) and draw(st.booleans()):
        event["card"] = draw(st.sampled_from([5, "x", None]))  # a path through a non-object
    return event


def lookup(event: dict[str, Any], path: str) -> Any:
    node: Any = event
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def reference(event: dict[str, Any]) -> tuple[list[float], tuple[str, str] | None]:
    """One row, the slow and obvious way."""
    row: list[float] = []
    reason: tuple[str, str] | None = None

    def reject(code: str) -> None:
        nonlocal reason
        reason = reason or (code, "")

    for spec in SPECS:
        value = lookup(event, spec.field_path)
        if value is None:
            if spec.required:
                reject("missing_field")
                value = "" if spec.dtype == "category" else 0
            else:
                value = spec.default if spec.default is not None else ""
        if spec.dtype == "category":
            if type(value) is not str:
                reject("wrong_type")
                value = ""
            idx = spec.categories.index(value) if value in spec.categories else None
            if spec.encoding == "one_hot":
                row += [1.0 if idx == i else 0.0 for i in range(len(spec.categories))]
            else:
                row.append(float(idx) if idx is not None else spec.unknown_value)
            continue
        ok = {"float": (int, float), "int": (int,), "bool": (bool,)}[spec.dtype]
        if type(value) not in ok and not (spec.dtype == "int" and type(value) is float and value.is_integer()):
            reject("wrong_type")
            value = 0
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        with np.errstate(over="ignore"):
            as_float32 = np.float32(number)
        if not math.isfinite(number) or not np.isfinite(as_float32):
            reject("non_finite")
            number = 0.0
        row.append(number)
    return row, reason


@settings(max_examples=300, deadline=None)
@given(st.lists(events(), max_size=30))
def test_matrix_and_reasons_match_the_reference(batch: list[dict[str, Any]]) -> None:
    extraction = FeatureExtractor(SPECS).extract(batch)
    assert extraction.matrix.dtype == np.float32
    assert extraction.matrix.shape == (len(batch), 1 + 1 + 1 + 1 + 3 + 1 + 1)
    for i, event in enumerate(batch):
        row, reason = reference(event)
        got = extraction.reasons[i]
        assert (got is None) == (reason is None), (event, got, reason)
        if reason is None:
            assert got is None
            np.testing.assert_allclose(extraction.matrix[i], np.array(row, dtype=np.float32), rtol=1e-6)
        else:
            assert got is not None and got[0] == reason[0], (event, got, reason)
    assert extraction.valid.tolist() == [r is None for r in extraction.reasons]


def test_nested_paths_defaults_and_encodings() -> None:
    event = {"amount": 12.5, "card": {"age_days": 30, "present": False},
             "merchant": {"category": "b", "country": "JP"}, "activity": {"counts": {}}}
    extraction = FeatureExtractor(SPECS).extract([event])
    assert extraction.reasons == [None]
    assert extraction.matrix[0].tolist() == [12.5, 30.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.5]


def test_first_reason_is_kept_and_detail_names_the_field() -> None:
    event = {"amount": "12", "card": {"age_days": 1.5, "present": True}, "merchant": {"category": "a"}}
    (reason,) = FeatureExtractor(SPECS).extract([event]).reasons
    assert reason == ("wrong_type", "amount: expected float, got string")


def test_empty_batch() -> None:
    extraction = FeatureExtractor(SPECS).extract([])
    assert extraction.matrix.shape == (0, 9) and extraction.reasons == []
