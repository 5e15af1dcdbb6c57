"""Feature extraction: random events built from the spec, checked row by row against a slow reference."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscore.config import FeatureSettings
from streamscore.core.features import MISSING, Extraction, FeatureExtractor, NotAnObject, gather

SPECS = [
    FeatureSettings(name="amount", dtype="float"),
    FeatureSettings(name="age", path="card.age_days", dtype="int"),
    FeatureSettings(name="present", path="card.present", dtype="bool"),
    FeatureSettings(name="n1h", path="activity.counts.h1", dtype="int", required=False, default=0),
    FeatureSettings(name="cat", path="merchant.category", dtype="category", encoding="one_hot",
                    categories=["a", "b", "c"]),
    FeatureSettings(name="country", path="merchant.country", dtype="category", encoding="index",
                    categories=["US", "DE"], unknown_value=-7.0),
    FeatureSettings(name="risk", path="merchant.risk", dtype="float", required=False, default=0.5),
    FeatureSettings(name="channel", path="channel", dtype="category", required=False, categories=["web", "pos"]),
    FeatureSettings(name="tier", path="card.tier", dtype="category", encoding="one_hot", required=False,
                    categories=["gold", "basic"]),
]
WIDTH = 1 + 1 + 1 + 1 + 3 + 1 + 1 + 1 + 2
PARENTS = ["card", "activity", "activity.counts", "merchant"]

ABSENT: Any = object()
"""The strategy's marker for a key left out of the event."""

ANY_VALUE = st.one_of(
    st.just(ABSENT), st.none(), st.booleans(),
    st.integers(-10**6, 10**6), st.integers(-2**80, 2**80),
    st.sampled_from([10**39, -10**39, 10**400, -10**400, 2**63, 2**64 + 1]),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-1e6, 1e6).map(float.__floor__).map(float),
    st.sampled_from([1e39, -1e39, 3.0e38, math.inf, -math.inf]),
    st.sampled_from(["a", "b", "c", "US", "DE", "JP", "", "web", "pos", "gold", "basic", "A"]), st.text(max_size=3),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
NON_OBJECT = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=3),
                       st.lists(st.integers(), max_size=2))


def put(event: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` in ``event``, creating objects on the way, unless a step is already a non-object."""
    if value is ABSENT:
        return
    *parents, leaf = path.split(".")
    node = event
    for p in parents:
        node = node.setdefault(p, {})
        if type(node) is not dict:
            return
    node[leaf] = value


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {}
    for parent in draw(st.lists(st.sampled_from(PARENTS), max_size=2, unique=True)):
        put(event, parent, draw(NON_OBJECT))  # a path through something that is not an object
    for spec in draw(st.permutations(SPECS)):
        put(event, spec.field_path, draw(ANY_VALUE))
    if draw(st.booleans()):
        event["unrelated"] = draw(ANY_VALUE.filter(lambda v: v is not ABSENT))
    return event


# -- the reference: one event at a time, the slow and obvious way ----------------------------------------------------

def lookup(event: dict[str, Any], path: str) -> tuple[str, Any]:
    """("ok", value), ("missing", None) or ("blocked", None) when a step is present but not an object."""
    node: Any = event
    for part in path.split("."):
        if node is None:
            return "missing", None
        if type(node) is not dict:
            return "blocked", None
        if part not in node:
            return "missing", None
        node = node[part]
    return ("missing", None) if node is None else ("ok", node)


def accepts(dtype: str, value: Any) -> bool:
    if dtype == "float":
        return type(value) in (int, float)
    if dtype == "int":
        return type(value) is int or (type(value) is float and value.is_integer())
    if dtype == "bool":
        return type(value) is bool
    return type(value) is str


def reference_row(
    specs: Sequence[FeatureSettings], event: dict[str, Any]
) -> tuple[list[float], tuple[str, str] | None]:
    row: list[float] = []
    reason: tuple[str, str] | None = None

    def reject(code: str, spec: FeatureSettings) -> None:
        nonlocal reason
        if reason is None:
            reason = (code, spec.field_path)

    for spec in specs:
        placeholder: Any = "" if spec.dtype == "category" else 0
        status, value = lookup(event, spec.field_path)
        if status == "blocked":
            reject("wrong_type", spec)
            value = placeholder
        elif status == "missing":
            if spec.required:
                reject("missing_field", spec)
                value = placeholder
            else:
                value = spec.default if spec.default is not None else ""
        elif not accepts(spec.dtype, value):
            reject("wrong_type", spec)
            value = placeholder
        if spec.dtype == "category":
            known = value in spec.categories
            if spec.encoding == "one_hot":
                position = spec.categories.index(value) if known else -1
                row += [1.0 if position == i else 0.0 for i in range(len(spec.categories))]
            else:
                row.append(float(spec.categories.index(value)) if known else spec.unknown_value)
            continue
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        with np.errstate(over="ignore"):
            single = np.float32(number)
        if not np.isfinite(single):
            reject("non_finite", spec)
            single = np.float32(0.0)
        row.append(float(single))
    return row, reason


def check_against_reference(specs: Sequence[FeatureSettings], batch: list[dict[str, Any]],
                            extraction: Extraction) -> None:
    width = sum(s.width for s in specs)
    assert extraction.matrix.dtype == np.float32
    assert extraction.matrix.shape == (len(batch), width)
    assert len(extraction.reasons) == len(batch)
    for i, event in enumerate(batch):
        row, expected = reference_row(specs, event)
        got = extraction.reasons[i]
        if expected is None:
            assert got is None, (event, got)
            np.testing.assert_array_equal(extraction.matrix[i], np.array(row, dtype=np.float32), err_msg=repr(event))
        else:
            code, path = expected
            assert got is not None, (event, expected)
            assert got[0] == code, (event, got, expected)
            assert got[1].startswith(f"{path}: "), "the first failing feature gives the reason"
    assert extraction.valid.dtype == bool
    assert extraction.valid.tolist() == [r is None for r in extraction.reasons]


@settings(max_examples=120, deadline=None)
@given(st.lists(events(), max_size=25))
def test_matrix_and_reasons_match_the_reference(batch: list[dict[str, Any]]) -> None:
    check_against_reference(SPECS, batch, FeatureExtractor(SPECS).extract(batch))


@settings(max_examples=60, deadline=None)
@given(st.lists(events(), min_size=1, max_size=10), st.integers(0, 9))
def test_a_row_does_not_depend_on_its_neighbours(batch: list[dict[str, Any]], pick: int) -> None:
    """The batch-wide fast paths give each row what it would get alone."""
    extractor = FeatureExtractor(SPECS)
    together = extractor.extract(batch)
    i = pick % len(batch)
    alone = extractor.extract([batch[i]])
    assert alone.reasons[0] == together.reasons[i]
    np.testing.assert_array_equal(alone.matrix[0], together.matrix[i])


def valid_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "amount": 12.5,
        "card": {"age_days": 30, "present": True, "tier": "basic"},
        "activity": {"counts": {"h1": 4}},
        "merchant": {"category": "b", "country": "DE", "risk": 0.25},
        "channel": "pos",
    }
    for path, value in overrides.items():
        *parents, leaf = path.split("__")
        node = event
        for p in parents:
            node = node[p]
        if value is ABSENT:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return event


@pytest.fixture
def extract() -> Callable[..., Extraction]:
    """Extract one or more events with SPECS (or the given specs)."""

    def run(*batch: dict[str, Any], specs: Sequence[FeatureSettings] = SPECS) -> Extraction:
        return FeatureExtractor(specs).extract(list(batch))

    return run


def test_a_complete_event(extract: Callable[..., Extraction]) -> None:
    e = extract(valid_event())
    assert e.reasons == [None]
    assert e.matrix.tolist() == [[12.5, 30.0, 1.0, 4.0, 0.0, 1.0, 0.0, 1.0, 0.25, 1.0, 0.0, 1.0]]


def test_missing_or_null_optional_fields_take_their_default(extract: Callable[..., Extraction]) -> None:
    absent = valid_event(activity__counts__h1=ABSENT, merchant__risk=None, channel=ABSENT, card__tier=None)
    no_section = {k: v for k, v in valid_event().items() if k != "activity"}
    e = extract(absent, no_section)
    assert e.reasons == [None, None]
    assert e.matrix[0].tolist() == [12.5, 30.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.5, -1.0, 0.0, 0.0]
    assert e.matrix[1, 3] == 0.0


@pytest.mark.parametrize("event", [
    valid_event(amount=ABSENT),
    valid_event(amount=None),
    valid_event(card__age_days=ABSENT),
    {k: v for k, v in valid_event().items() if k != "card"},
    valid_event(card=None),
    valid_event(merchant__category=ABSENT),
])
def test_missing_required_fields(extract: Callable[..., Extraction], event: dict[str, Any]) -> None:
    (reason,) = extract(event).reasons
    assert reason is not None and reason[0] == "missing_field"
    assert reason[1].endswith(": required field is missing")


@pytest.mark.parametrize(("overrides", "detail"), [
    ({"amount": True}, "amount: expected float, got bool"),
    ({"amount": "12.5"}, "amount: expected float, got string"),
    ({"amount": {"value": 1}}, "amount: expected float, got object"),
    ({"amount": [1.0]}, "amount: expected float, got array"),
    ({"card__age_days": "30"}, "card.age_days: expected int, got string"),
    ({"card__age_days": 30.5}, "card.age_days: expected int, got float"),
    ({"card__age_days": False}, "card.age_days: expected int, got bool"),
    ({"card__present": 1}, "card.present: expected bool, got int"),
    ({"card__present": "true"}, "card.present: expected bool, got string"),
    ({"merchant__category": 3}, "merchant.category: expected category, got int"),
    ({"merchant__country": ["US"]}, "merchant.country: expected category, got array"),
    ({"activity__counts__h1": "4"}, "activity.counts.h1: expected int, got string"),
    ({"merchant__risk": {"x": 1}}, "merchant.risk: expected float, got object"),
])
def test_wrong_types_are_rejected_with_a_detail_naming_the_field(
    extract: Callable[..., Extraction], overrides: dict[str, Any], detail: str
) -> None:
    assert extract(valid_event(**overrides)).reasons == [("wrong_type", detail)]


@pytest.mark.parametrize(("overrides", "detail"), [
    ({"card": 5}, "card.age_days: expected an object at card, got int"),
    ({"card": "gold"}, "card.age_days: expected an object at card, got string"),
    ({"card": [1, 2]}, "card.age_days: expected an object at card, got array"),
    ({"activity": True}, "activity.counts.h1: expected an object at activity, got bool"),
    ({"activity__counts": 3.5}, "activity.counts.h1: expected an object at activity.counts, got float"),
])
def test_a_path_through_a_non_object_is_a_wrong_type_even_for_optional_features(
    extract: Callable[..., Extraction], overrides: dict[str, Any], detail: str
) -> None:
    assert extract(valid_event(**overrides)).reasons == [("wrong_type", detail)]


def test_integral_floats_are_accepted_as_ints(extract: Callable[..., Extraction]) -> None:
    e = extract(valid_event(card__age_days=30.0))
    assert e.reasons == [None] and e.matrix[0, 1] == 30.0


@pytest.mark.parametrize(("overrides", "field"), [
    ({"amount": math.inf}, "amount"),
    ({"amount": -math.inf}, "amount"),
    ({"amount": math.nan}, "amount"),
    ({"amount": 1e39}, "amount"),
    ({"amount": 10**400}, "amount"),
    ({"amount": -10**400}, "amount"),
    ({"amount": 10**39}, "amount"),
    ({"card__age_days": 10**400}, "card.age_days"),
    ({"card__age_days": 1e300}, "card.age_days"),
    ({"activity__counts__h1": -10**400}, "activity.counts.h1"),
    ({"merchant__risk": -1e39}, "merchant.risk"),
])
def test_values_beyond_float32_are_non_finite(
    extract: Callable[..., Extraction], overrides: dict[str, Any], field: str
) -> None:
    e = extract(valid_event(**overrides), valid_event())
    assert e.reasons[0] == ("non_finite", f"{field}: not a finite float32 number")
    assert e.reasons[1] is None, "the neighbouring row is unaffected"
    assert np.isfinite(e.matrix).all(), "a non-finite value never reaches the matrix"


def test_largest_float32_and_big_ints_within_range_are_fine(extract: Callable[..., Extraction]) -> None:
    e = extract(valid_event(amount=3.0e38), valid_event(amount=2**100), valid_event(card__age_days=-(2**64)))
    assert e.reasons == [None, None, None]
    assert e.matrix[0, 0] == np.float32(3.0e38) and e.matrix[1, 0] == np.float32(2.0**100)
    assert e.matrix[2, 1] == np.float32(-(2.0**64))


def test_unknown_categories(extract: Callable[..., Extraction]) -> None:
    e = extract(valid_event(merchant__category="zzz", merchant__country="JP", card__tier="", channel="Web"))
    assert e.reasons == [None], "an unknown category is a value, not an error"
    row = e.matrix[0].tolist()
    assert row[4:7] == [0.0, 0.0, 0.0], "one_hot: all zeros"
    assert row[7] == -7.0, "index: unknown_value"
    assert row[9] == -1.0 and row[10:12] == [0.0, 0.0], "categories are case-sensitive"


def test_every_category_encodes_to_its_position(extract: Callable[..., Extraction]) -> None:
    pairs = [("a", "US"), ("b", "DE"), ("c", "US")]
    e = extract(*(valid_event(merchant__category=c, merchant__country=k) for c, k in pairs))
    assert e.matrix[:, 4:7].tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert e.matrix[:, 7].tolist() == [0.0, 1.0, 0.0]


def test_the_first_reason_per_row_is_kept(extract: Callable[..., Extraction]) -> None:
    event = valid_event(amount=10**400, card__age_days="x", merchant__category=ABSENT)
    (reason,) = extract(event).reasons
    assert reason == ("non_finite", "amount: not a finite float32 number")
    event = valid_event(card__present="no", merchant__category=ABSENT, merchant__risk=math.inf)
    (reason,) = extract(event).reasons
    assert reason == ("wrong_type", "card.present: expected bool, got string")


def test_shape_dtype_and_column_names(extract: Callable[..., Extraction]) -> None:
    e = extract(valid_event(), valid_event(amount="x"), valid_event())
    assert e.matrix.shape == (3, WIDTH) and e.matrix.dtype == np.float32
    assert e.valid.tolist() == [True, False, True]
    extractor = FeatureExtractor(SPECS)
    assert extractor.width == WIDTH
    assert extractor.column_names == ["amount", "age", "present", "n1h", "cat=a", "cat=b", "cat=c", "country",
                                      "risk", "channel", "tier=gold", "tier=basic"]


def test_empty_batch(extract: Callable[..., Extraction]) -> None:
    e = extract()
    assert e.matrix.shape == (0, WIDTH) and e.matrix.dtype == np.float32
    assert e.reasons == [] and e.valid.tolist() == []


def test_gather_reads_dotted_paths_once_into_the_shared_cache() -> None:
    batch = [{"card": {"id": "c1"}}, {"card": None}, {"card": 7}, {}, {"card": {"id": None}}]
    cache: dict[str, list[Any]] = {}
    ids = gather(batch, "card.id", cache)
    assert ids[0] == "c1" and ids[1] is MISSING and ids[3] is MISSING
    assert ids[2] == NotAnObject("card", "int")
    assert ids[4] is None, "an explicit null is kept for copying; features treat it as absent"
    assert set(cache) == {"card", "card.id"}
    assert gather(batch, "card.id", cache) is ids
    assert gather(batch, "card.id.deeper", cache)[2] == NotAnObject("card", "int"), "the first non-object is named"


def test_extract_fills_the_callers_cache() -> None:
    cache: dict[str, list[Any]] = {}
    FeatureExtractor(SPECS).extract([valid_event()], cache)
    assert cache["merchant.category"] == ["b"] and cache["merchant"] == [valid_event()["merchant"]]


def test_features_sharing_a_prefix_and_a_single_feature_spec() -> None:
    specs = [FeatureSettings(name="x", path="a.b.c", dtype="float"),
             FeatureSettings(name="y", path="a.b.d", dtype="int")]
    batch: list[dict[str, Any]] = [{"a": {"b": {"c": 1.5, "d": 2}}}, {"a": {"b": {"c": 1}}}, {"a": {"b": []}}]
    e = FeatureExtractor(specs).extract(batch)
    check_against_reference(specs, batch, e)
    assert e.matrix[0].tolist() == [1.5, 2.0]
    assert e.reasons[1] == ("missing_field", "a.b.d: required field is missing")
    assert e.reasons[2] == ("wrong_type", "a.b.c: expected an object at a.b, got array")
