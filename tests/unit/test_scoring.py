"""Scoring core: decode reasons, model-failure isolation, and one result per message, end to end.

The model is a fake implementing the ``ModelRunner`` protocol; messages are a small fake with the
``confluent_kafka.Message`` accessors.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscore.config import Settings
from streamscore.core.decode import decode
from streamscore.core.records import Reason, Rejection, ScoredBatch, SourceMessage
from streamscore.core.scorer import Scorer, ScoringSpec, predict_isolating
from streamscore.runners.base import ModelRunner
from tests.unit.fakes import Message

MARK = 666.0
"""An amount the fake model cannot score: it raises for any batch holding it."""
NAN_MARK = 777.0
"""An amount the fake model scores as NaN."""


class FakeRunner:
    """score = amount / 1000 (column 0); raises on MARK, NaN on NAN_MARK; records its calls."""

    name, version, provider = "fake-model", "v3", "CPUExecutionProvider"

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.loaded = self.closed = False

    def load(self) -> None:
        self.loaded = True

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        assert matrix.dtype == np.float32 and matrix.ndim == 2
        self.calls.append(matrix.shape[0])
        if (matrix[:, 0] == MARK).any():
            raise RuntimeError("cannot score this row\nsecond line")
        scores = matrix[:, 0] / 1000
        scores[matrix[:, 0] == NAN_MARK] = np.nan
        return scores

    def close(self) -> None:
        self.closed = True


def make_settings(**overrides: Any) -> Settings:
    raw: dict[str, Any] = {
        "kafka": {"source_topics": ["in"], "destination_topic": "out", "dead_letter_topic": "dlq"},
        "batching": {"max_message_bytes": 300},
        "model": {"path": Path("unused.onnx")},
        "features": [
            {"name": "amount", "dtype": "float"},
            {"name": "category", "path": "merchant.category", "dtype": "category", "encoding": "one_hot",
             "categories": ["fuel", "food"]},
            {"name": "present", "path": "card.present", "dtype": "bool"},
            {"name": "hour", "dtype": "int", "required": False, "default": 12},
        ],
        "decisions": {"default": "approve", "rules": [{"label": "review", "min_score": 0.5},
                                                      {"label": "reject", "min_score": 0.9}]},
        "output": {"copy_fields": ["transaction_id", "card.id", "amount", "meta.origin"]},
        **overrides,
    }
    return Settings.model_validate(raw)


def event(**overrides: Any) -> dict[str, Any]:
    return {"transaction_id": "t", "amount": 100.0, "merchant": {"category": "fuel"},
            "card": {"present": True, "id": "c-1"}, "hour": 3, **overrides}


@pytest.fixture
def runner() -> FakeRunner:
    return FakeRunner()


@pytest.fixture
def scorer(runner: FakeRunner) -> Scorer:
    model: ModelRunner = runner  # the fake satisfies the protocol
    return Scorer(ScoringSpec.from_settings(make_settings()), model)


@pytest.fixture
def make_messages() -> Callable[..., list[Message]]:
    """Messages at consecutive offsets of one partition from event dicts or raw values."""

    def make(*values: dict[str, Any] | bytes | None, topic: str = "in", partition: int = 0, first: int = 0
             ) -> list[Message]:
        return [Message(topic, partition, first + i, orjson.dumps(v) if isinstance(v, dict) else v)
                for i, v in enumerate(values)]

    return make


# -- decode ---------------------------------------------------------------------------------------------------------

def test_decode_keeps_objects_in_place() -> None:
    events, rejections = decode([b'{"a": 1}', b'{"b": {"c": [1, 2]}}', b" {} "], max_bytes=100)
    assert events == [{"a": 1}, {"b": {"c": [1, 2]}}, {}]
    assert rejections == []


@pytest.mark.parametrize(("value", "reason"), [
    (None, "empty"),
    (b"x" * 21, "oversize"),
    (b'{"a": "' + b"y" * 20 + b'"}', "oversize"),
    (b"{nope", "malformed_json"),
    (b'{"a": 1', "malformed_json"),
    (b'{"a": 1} trailing', "malformed_json"),
    (b"\xff\xfe", "malformed_json"),
    (b"", "empty"),
    (b"[1]", "not_an_object"),
    (b'"text"', "not_an_object"),
    (b"42", "not_an_object"),
    (b"null", "not_an_object"),
    (b"true", "not_an_object"),
    (b'{"a": NaN}', "non_finite"),
    (b'{"a": Infinity}', "non_finite"),
    (b'{"a": -Infinity}', "non_finite"),
    (b'{"a": 1e999}', "non_finite"),
])
def test_decode_reasons(value: bytes | None, reason: str) -> None:
    events, rejections = decode([b"{}", value, b"{}"], max_bytes=20)
    assert events[0] == {} and events[1] is None and events[2] == {}
    assert [(r.index, r.reason) for r in rejections] == [(1, reason)]
    assert rejections[0].detail and "\n" not in rejections[0].detail


def test_decode_size_limit_is_inclusive_and_details_say_why() -> None:
    at_limit = b'{"a": "' + b"y" * 3 + b'"}'
    events, rejections = decode([at_limit, at_limit + b" ", None], max_bytes=len(at_limit))
    assert events[0] == {"a": "yyy"}
    assert rejections == [
        Rejection(1, Reason.OVERSIZE, f"{len(at_limit) + 1} bytes exceeds the limit of {len(at_limit)}"),
        Rejection(2, Reason.EMPTY, "message has no value"),
    ]


def test_decode_nothing() -> None:
    assert decode([], max_bytes=10) == ([], [])


def nested(depth: int, leaf: bytes = b"1", opener: bytes = b'{"a":', closer: bytes = b"}") -> bytes:
    """A JSON value with ``depth`` levels of containers around ``leaf``."""
    return opener * depth + leaf + closer * depth


@pytest.mark.parametrize(("value", "fate"), [
    (nested(8), "ok"),
    (nested(9), "too_deep"),
    (b'{"a":' + nested(7, opener=b"[", closer=b"]") + b"}", "ok"),
    (b'{"a":' + nested(8, opener=b"[", closer=b"]") + b"}", "too_deep"),
    (b'{"a": [' + b",".join([b'{"b": [1]}'] * 50) + b"]}", "ok"),  # many brackets, shallow
    (b'{"a": "' + b"[{" * 100 + b'"}', "ok"),  # brackets inside a string
    (b'{"a": 1, "b": ' + nested(7) + b', "c": ' + nested(8, opener=b"[", closer=b"]") + b"}", "too_deep"),
    (nested(1100), "too_deep"),  # beyond orjson's own limit (1024): decoding fails
    (nested(1100, opener=b"[", closer=b"]"), "too_deep"),
])
def test_decode_nesting_limit(value: bytes, fate: str) -> None:
    events, rejections = decode([value, b"{}"], max_bytes=100_000, max_depth=8)
    assert events[1] == {}
    if fate == "ok":
        assert rejections == [] and type(events[0]) is dict
    else:
        assert events[0] is None
        assert rejections == [Rejection(0, Reason.TOO_DEEP, "JSON nested deeper than 8 levels")]


def test_the_deepest_allowed_event_renders_its_copied_fields(runner: FakeRunner) -> None:
    """254 levels (the highest limit) still fit orjson's writer when copied into an output."""
    limits = {"max_message_bytes": 100_000, "max_json_depth": 254}
    scorer = Scorer(ScoringSpec.from_settings(make_settings(batching=limits, output={"copy_fields": ["meta"]})), runner)
    head = orjson.dumps(event())[:-1] + b', "meta": '
    deep, too_deep = head + nested(253) + b"}", head + nested(254) + b"}"  # orjson cannot write these
    result = scorer.score([Message("in", 0, 0, deep), Message("in", 0, 1, too_deep)])
    assert result.scored == [0] and orjson.loads(result.outputs[0])["meta"] == orjson.loads(nested(253))
    assert [(r.index, r.reason) for r in result.rejections] == [(1, "too_deep")]


REASONS = {"empty", "oversize", "malformed_json", "not_an_object", "non_finite", "too_deep", "missing_field",
           "wrong_type", "model_error"}

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


def as_json(value: Any) -> bytes:
    """The stdlib's writer: it keeps NaN/Infinity literals, big integers and lone surrogates
    (as ``\\ud800`` escapes), which orjson would refuse to write."""
    return json.dumps(value).encode()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64) | JSON_VALUES.map(as_json) | st.none(), max_size=20))
def test_decode_never_raises_and_gives_each_value_one_fate(values: list[bytes | None]) -> None:
    events, rejections = decode(values, max_bytes=40, max_depth=3)
    assert len(events) == len(values)
    rejected = {r.index for r in rejections}
    assert len(rejected) == len(rejections), "at most one rejection per value"
    for i, e in enumerate(events):
        assert (e is None) == (i in rejected)
        assert e is None or type(e) is dict
    assert {r.reason for r in rejections} <= REASONS
    assert all(r.detail and "\n" not in r.detail for r in rejections)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([b'{"a": 1}', b'{"b": {"c": [1]}}']) | st.binary(max_size=16)
                | JSON_VALUES.map(as_json) | st.none(), min_size=1, max_size=3).flatmap(
    lambda kinds: st.lists(st.sampled_from(kinds), max_size=100)))
def test_decode_of_a_batch_is_the_decode_of_each_value(values: list[bytes | None]) -> None:
    """Chunks decoded together give what each value decoded alone gives, at the same positions."""
    events, rejections = decode(values, max_bytes=40, max_depth=3)
    alone = [decode([value], max_bytes=40, max_depth=3) for value in values]
    assert events == [e[0] for e, _ in alone]
    assert rejections == [Rejection(i, r.reason, r.detail) for i, (_, rs) in enumerate(alone) for r in rs]


FIELD_VALUES = JSON_VALUES | st.sampled_from([float("nan"), float("inf"), 1e39, 2**70, -(2**64), "\u0000", "\ud800"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["transaction_id", "amount", "merchant", "card", "hour", "meta"]),
                                FIELD_VALUES, max_size=6), max_size=20))
def test_any_json_object_is_scored_or_rejected_and_outputs_are_json(objects: list[dict[str, Any]]) -> None:
    msgs = [Message("in", 0, i, as_json(o)) for i, o in enumerate(objects)]
    spec = ScoringSpec.from_settings(make_settings(batching={"max_message_bytes": 10_000, "max_json_depth": 4}))
    result = Scorer(spec, FakeRunner()).score(msgs)
    fates = outcome(result, len(msgs))
    assert set(fates.values()) <= REASONS | {"scored"}
    for raw in result.outputs:
        assert orjson.loads(raw)["decision"] in {"approve", "review", "reject"}


# -- predict_isolating ----------------------------------------------------------------------------------------------

def column(values: Sequence[float]) -> np.ndarray:
    return np.array(values, dtype=np.float32).reshape(-1, 1)


def test_predict_isolating_calls_the_model_once_when_nothing_fails(runner: FakeRunner) -> None:
    scores, failed = predict_isolating(runner, column([1.0, 2.0, 3.0]))
    assert failed == {} and runner.calls == [3]
    np.testing.assert_allclose(scores, [0.001, 0.002, 0.003])


def test_predict_isolating_a_single_failing_row(runner: FakeRunner) -> None:
    scores, failed = predict_isolating(runner, column([MARK]))
    assert np.isnan(scores).all() and scores.shape == (1,)
    assert failed == {0: "RuntimeError: cannot score this row\nsecond line"}


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 200).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1)))))
def test_predict_isolating_isolates_exactly_the_marked_rows(case: tuple[int, set[int]]) -> None:
    rows, marked = case
    values = [MARK if i in marked else float(i + 1) for i in range(rows)]
    runner = FakeRunner()
    scores, failed = predict_isolating(runner, column(values))
    assert scores.shape == (rows,)
    assert set(failed) == marked, "exactly the marked rows are isolated"
    assert all(msg.startswith("RuntimeError: cannot score this row") for msg in failed.values())
    good = [i for i in range(rows) if i not in marked]
    np.testing.assert_allclose(scores[good], np.array([values[i] for i in good], dtype=np.float32) / 1000)
    assert np.isnan(scores[sorted(marked)]).all()
    assert sum(runner.calls) <= rows * (1 + max(1, rows.bit_length())), "bisection, not a quadratic search"
    if marked:
        assert len(runner.calls) <= 1 + 2 * len(marked) * max(1, rows.bit_length())


# -- Scorer end to end ----------------------------------------------------------------------------------------------

def outcome(result: ScoredBatch, n: int) -> dict[int, str]:
    """Each position's fate: "scored" or its rejection reason; fails if any position has none or two."""
    fates: dict[int, str] = {}
    for i in result.scored:
        fates[i] = "scored"
    for r in result.rejections:
        assert r.index not in fates, f"position {r.index} has two results"
        fates[r.index] = r.reason
    assert sorted(fates) == list(range(n)), "every position has a result"
    return fates


def test_every_message_is_scored_or_rejected_exactly_once(
    scorer: Scorer, runner: FakeRunner, make_messages: Callable[..., list[Message]]
) -> None:
    msgs = make_messages(
        event(transaction_id="t0", amount=100.0),
        None,
        b"{oops",
        b"[1, 2]",
        event(transaction_id="t4", amount=600.0),
        event(amount="many"),
        {k: v for k, v in event().items() if k != "amount"},
        event(amount=MARK),
        b'{"amount": NaN}',
        event(amount=NAN_MARK),
        b'{"pad": "' + b"z" * 400 + b'"}',
        event(amount=1e39),
        event(transaction_id="t12", amount=950.0, hour=None),
        event(card=7),
    )
    result = scorer.score(msgs)
    assert outcome(result, len(msgs)) == {
        0: "scored", 1: "empty", 2: "malformed_json", 3: "not_an_object", 4: "scored", 5: "wrong_type",
        6: "missing_field", 7: "model_error", 8: "non_finite", 9: "model_error", 10: "oversize", 11: "non_finite",
        12: "scored", 13: "wrong_type",
    }
    assert result.scored == [0, 4, 12]
    assert [r.index for r in result.rejections] == sorted(r.index for r in result.rejections)
    details = {r.index: r.detail for r in result.rejections}
    assert details[7].startswith("RuntimeError: cannot score this row")
    assert details[9] == "model returned a non-finite score"
    assert details[5] == "amount: expected float, got string"
    assert details[13] == "card.present: expected an object at card, got int"
    np.testing.assert_allclose(result.scores, [0.1, 0.6, 0.95])
    assert result.decisions.tolist() == [0, 1, 2]
    assert len(result.outputs) == 3
    assert result.inference_seconds >= 0
    assert all(n <= 12 for n in runner.calls), "only decodable, well-formed rows reach the model"


def test_output_records(scorer: Scorer, make_messages: Callable[..., list[Message]]) -> None:
    msgs = make_messages(
        event(transaction_id="a", amount=500.0, meta={"origin": "web"}),
        event(transaction_id=None, amount=10.0, card={"present": False}, meta=5),
        {k: v for k, v in event(amount=950.0).items() if k != "transaction_id"},
        topic="payments", partition=3, first=41,
    )
    msgs[1]._ts = (0, -1)  # TIMESTAMP_NOT_AVAILABLE
    before = int(time.time() * 1000)
    result = scorer.score(msgs)
    after = int(time.time() * 1000)
    records = [orjson.loads(o) for o in result.outputs]
    scored_at = [r.pop("scored_at_ms") for r in records]
    assert all(before <= t <= after for t in scored_at)
    common = {"model": "fake-model", "model_version": "v3"}
    assert records == [
        {"transaction_id": "a", "card.id": "c-1", "amount": 500.0, "meta.origin": "web",
         "score": 0.5, "decision": "review", **common,
         "source": {"topic": "payments", "partition": 3, "offset": 41}, "event_time_ms": 1_700_000_000_000},
        {"transaction_id": None, "amount": 10.0, "score": pytest.approx(0.01), "decision": "approve", **common,
         "source": {"topic": "payments", "partition": 3, "offset": 42}, "event_time_ms": None},
        {"card.id": "c-1", "amount": 950.0, "score": pytest.approx(0.95), "decision": "reject", **common,
         "source": {"topic": "payments", "partition": 3, "offset": 43}, "event_time_ms": 1_700_000_000_000},
    ], "copied fields keep their dotted names; absent ones (or under a non-object) are left out; null is kept"


def test_a_batch_with_nothing_valid_never_calls_the_model(
    scorer: Scorer, runner: FakeRunner, make_messages: Callable[..., list[Message]]
) -> None:
    result = scorer.score(make_messages(None, b"[]", event(amount=True)))
    assert result.scored == [] and result.outputs == [] and runner.calls == []
    assert result.scores.shape == (0,) and result.decisions.shape == (0,)
    assert [r.reason for r in result.rejections] == ["empty", "not_an_object", "wrong_type"]


def test_an_empty_batch(scorer: Scorer, runner: FakeRunner) -> None:
    result = scorer.score([])
    assert result.scored == [] and result.outputs == [] and result.rejections == [] and runner.calls == []


def test_a_model_failure_on_the_whole_batch_rejects_only_the_bad_rows(
    scorer: Scorer, make_messages: Callable[..., list[Message]]
) -> None:
    amounts = [MARK if i % 5 == 2 else float(i) for i in range(40)]
    result = scorer.score(make_messages(*(event(amount=a) for a in amounts)))
    fates = outcome(result, 40)
    assert [i for i, f in fates.items() if f == "model_error"] == [i for i in range(40) if i % 5 == 2]
    np.testing.assert_allclose(result.scores, [amounts[i] / 1000 for i in result.scored])


MESSAGE_KIND = st.sampled_from(["ok", "ok", "ok", "empty", "malformed", "array", "missing", "wrong", "raises", "nan",
                                "oversize", "huge", "blocked"])


def message_value(kind: str, i: int) -> bytes | None:
    values: dict[str, Callable[[], bytes | None]] = {
        "ok": lambda: orjson.dumps(event(transaction_id=f"t{i}", amount=float(i))),
        "empty": lambda: None,
        "malformed": lambda: b'{"amount": ',
        "array": lambda: orjson.dumps([event()]),
        "missing": lambda: orjson.dumps({"amount": 1.0}),
        "wrong": lambda: orjson.dumps(event(hour="noon")),
        "raises": lambda: orjson.dumps(event(amount=MARK)),
        "nan": lambda: orjson.dumps(event(amount=NAN_MARK)),
        "oversize": lambda: orjson.dumps(event(note="n" * 400)),
        "huge": lambda: b'{"amount": ' + b"9" * 200 + b', "merchant": {"category": "fuel"}, "card": {"present": true}}',
        "blocked": lambda: orjson.dumps(event(merchant="fuel")),
    }
    return values[kind]()


EXPECTED_FATE = {"ok": "scored", "empty": "empty", "malformed": "malformed_json", "array": "not_an_object",
                 "missing": "missing_field", "wrong": "wrong_type", "raises": "model_error", "nan": "model_error",
                 "oversize": "oversize", "huge": "non_finite", "blocked": "wrong_type"}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(MESSAGE_KIND, st.sampled_from([("a", 0), ("a", 1), ("b", 0)])), max_size=40))
def test_random_batches_give_each_position_exactly_one_result(batch: list[tuple[str, tuple[str, int]]]) -> None:
    offsets: dict[tuple[str, int], int] = {}
    msgs: list[SourceMessage] = []
    for i, (kind, (topic, partition)) in enumerate(batch):
        offset = offsets[(topic, partition)] = offsets.get((topic, partition), -1) + 1
        msgs.append(Message(topic, partition, offset, message_value(kind, i)))
    result = Scorer(ScoringSpec.from_settings(make_settings()), FakeRunner()).score(msgs)
    fates = outcome(result, len(msgs))
    assert fates == {i: EXPECTED_FATE[kind] for i, (kind, _) in enumerate(batch)}
    assert result.scored == sorted(result.scored)
    assert len(result.outputs) == len(result.scored) == result.scores.shape[0] == result.decisions.shape[0]
    for i, raw in zip(result.scored, result.outputs, strict=True):
        record = orjson.loads(raw)
        assert record["source"] == {"topic": msgs[i].topic(), "partition": msgs[i].partition(),
                                    "offset": msgs[i].offset()}
        assert record["transaction_id"] == f"t{i}"


def test_a_failing_batch_is_not_scored_whole_twice(scorer: Scorer, runner: FakeRunner,
                                                    make_messages: Callable[..., list[Message]]) -> None:
    """After the whole batch raised once (and the probe row passed), bisection starts at the halves."""
    result = scorer.score(make_messages(event(amount=1.0), event(amount=MARK), event(amount=3.0), event(amount=4.0)))
    assert [r.index for r in result.rejections] == [1]
    assert runner.calls.count(4) == 1, f"rows per model call: {runner.calls}"
