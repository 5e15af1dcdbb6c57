"""REST request bodies -> what the core scores, and the core's results -> answers (no server)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from streamscore.core.records import Reason, Rejection
from streamscore.core.scorer import Scorer, ScoringSpec
from streamscore.serving.catalog import ConfiguredCatalog
from streamscore.serving.protocol import openapi
from streamscore.serving.requests import (
    BadRequest,
    outcomes,
    parse_infer,
    score_body,
    split_events,
    tensor_rows,
)
from tests.unit.test_scoring import MARK, FakeRunner, event, make_settings

WIDTH = 5  # amount, two one-hot categories, present, hour


@pytest.fixture
def scorer() -> Scorer:
    return Scorer(ScoringSpec.from_settings(make_settings()), FakeRunner())


def score(scorer: Scorer, body: bytes) -> tuple[int, dict[str, Any]]:
    events, as_list = split_events(body, 300, 64, 10)
    return score_body(outcomes(scorer.score(events), len(events)), as_list)


def test_one_event_is_scored_as_the_topic_would_and_answered_without_its_kafka_source(scorer: Scorer) -> None:
    status, body = score(scorer, orjson.dumps(event(amount=600.0)))
    assert status == 200
    assert body["score"] == pytest.approx(0.6)
    assert body["decision"] == "review"
    assert (body["model"], body["model_version"], body["transaction_id"]) == ("fake-model", "v3", "t")
    assert "source" not in body and "event_time_ms" not in body


@pytest.mark.parametrize(("body", "reason"), [
    (b"", "empty"),
    (b"{nope", "malformed_json"),
    (b'"just a string"', "not_an_object"),
    (b'{"amount": NaN}', "non_finite"),
    (orjson.dumps({"merchant": {"category": "fuel"}}), "missing_field"),
    (orjson.dumps(event(amount="ten")), "wrong_type"),
    (b'{"a":' + b"[" * 70 + b"]" * 70 + b"}", "too_deep"),
    (orjson.dumps(event(pad="x" * 400)), "oversize"),
])
def test_an_event_that_cannot_be_scored_is_a_422_with_the_dead_letter_reason(scorer: Scorer, body: bytes,
                                                                              reason: str) -> None:
    status, answer = score(scorer, body)
    assert status == 422
    assert answer["reason"] == reason
    assert answer["error"], "a sentence says why"


def test_a_list_answers_every_event_in_order_and_is_422_if_any_was_rejected(scorer: Scorer) -> None:
    good = [event(amount=100.0), event(amount=950.0)]
    status, answer = score(scorer, orjson.dumps(good))
    assert status == 200
    assert [r["decision"] for r in answer["results"]] == ["approve", "reject"]
    status, answer = score(scorer, orjson.dumps([good[0], {"amount": "x"}, event(amount=MARK)]))
    assert status == 422
    assert answer["reason"] == "rejected"
    first, second, third = answer["results"]
    assert first["decision"] == "approve"
    assert (second["index"], second["reason"]) == (1, "wrong_type")
    assert (third["index"], third["reason"]) == (2, "model_error"), "the row the model raises on, by bisection"


@pytest.mark.parametrize(("body", "status", "reason"), [
    (b"[]", 422, "empty"),
    (b"[{]", 422, "malformed_json"),
    (b"[1e999]", 422, "non_finite"),
    (orjson.dumps([event()] * 11), 413, "too_many_events"),
])
def test_a_list_body_that_is_not_a_list_of_events(body: bytes, status: int, reason: str) -> None:
    with pytest.raises(BadRequest) as refused:
        split_events(body, 10_000, 64, 10)
    assert (refused.value.status, refused.value.reason) == (status, reason)


def test_non_objects_in_a_list_are_rejected_one_by_one(scorer: Scorer) -> None:
    status, answer = score(scorer, b'[1, "x", null]')
    assert status == 422
    assert [r["reason"] for r in answer["results"]] == ["not_an_object"] * 3


def infer_body(data: Any, shape: list[int], name: str = "features", datatype: str = "FP32", **more: Any) -> bytes:
    return orjson.dumps({"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}], **more})


def test_a_tensor_request_becomes_a_float32_matrix(scorer: Scorer) -> None:
    info = ConfiguredCatalog(scorer, make_settings()).models()[0]
    rows = [[1, 0, 1, 1, 3], [2, 1, 0, 0, 4]]
    matrix = tensor_rows(parse_infer(infer_body(rows, [2, WIDTH]), info, 10), WIDTH)
    assert matrix.dtype == np.float32 and matrix.tolist() == rows
    flat_body = infer_body([v for row in rows for v in row], [2, WIDTH], datatype="INT64")
    flat = tensor_rows(parse_infer(flat_body, info, 10), WIDTH)
    assert flat.tolist() == rows, "flat data in row-major order, any numeric datatype"
    one = tensor_rows(parse_infer(infer_body(rows[0], [WIDTH]), info, 10), WIDTH)
    assert one.shape == (1, WIDTH)


@pytest.mark.parametrize(("body", "status", "reason"), [
    (b"{", 400, "bad_request"),
    (b'{"inputs": []}', 400, "bad_request"),
    (infer_body([1] * WIDTH, [1, WIDTH], name="x"), 400, "bad_request"),
    (infer_body([1] * 4, [1, 4]), 400, "bad_request"),
    (infer_body([1] * 4, [1, WIDTH]), 400, "bad_request"),
    (infer_body(["a"] * WIDTH, [1, WIDTH]), 400, "wrong_type"),
    (infer_body([None] * WIDTH, [1, WIDTH]), 400, "non_finite"),
    (infer_body([1e300] * WIDTH, [1, WIDTH]), 400, "non_finite"),
    (infer_body([[1, 2], [3]], [1, WIDTH]), 400, "wrong_type"),
    (infer_body(["a"] * WIDTH, [1, WIDTH], datatype="BYTES"), 400, "bad_request"),
    (infer_body([1] * WIDTH * 11, [11, WIDTH]), 413, "too_many_events"),
    (infer_body([1] * WIDTH, [1, WIDTH], outputs=[{"name": "nope"}]), 400, "bad_request"),
])
def test_a_bad_tensor_request_is_refused_naming_what_is_wrong(scorer: Scorer, body: bytes, status: int,
                                                              reason: str) -> None:
    info = ConfiguredCatalog(scorer, make_settings()).models()[0]
    with pytest.raises(BadRequest) as refused:
        tensor_rows(parse_infer(body, info, 10), WIDTH)
    assert (refused.value.status, refused.value.reason) == (status, reason)


def test_matrix_scoring_shares_the_model_call_bisection_and_decisions(scorer: Scorer) -> None:
    matrix = np.array([[100, 0, 1, 1, 3], [MARK, 0, 1, 1, 3], [950, 0, 1, 1, 3]], dtype=np.float32)
    result = scorer.score_matrix(matrix)
    assert result.scores[[0, 2]].tolist() == pytest.approx([0.1, 0.95])
    assert [scorer.policy.labels[d] for d in result.decisions[[0, 2]].tolist()] == ["approve", "reject"]
    assert list(result.failed) == [1] and "cannot score this row" in result.failed[1]


def test_outcomes_put_records_and_rejections_back_in_request_order(scorer: Scorer) -> None:
    events, _ = split_events(orjson.dumps([{"amount": "x"}, event()]), 300, 64, 10)
    first, second = outcomes(scorer.score(events), 2)
    assert isinstance(first, Rejection) and first.reason is Reason.WRONG_TYPE
    assert isinstance(second, bytes)


def test_the_catalog_answers_to_the_name_and_the_default_alias(scorer: Scorer) -> None:
    catalog = ConfiguredCatalog(scorer, make_settings())
    assert catalog.resolve("fake-model") is catalog.resolve("default") is catalog.resolve("fake-model", "v3")
    assert catalog.resolve("fake-model", "v2") is None and catalog.resolve("other") is None
    (info,) = catalog.models()
    assert info.inputs[0].shape == (-1, WIDTH) and info.features == ("amount", "merchant.category",
                                                                     "card.present", "hour")


def test_the_openapi_document_references_only_schemas_it_defines() -> None:
    doc = openapi(auth=True)
    text = orjson.dumps(doc).decode()
    refs = {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}
    assert refs and refs <= set(doc["components"]["schemas"])
    assert doc["security"] == [{"bearer": []}]
    assert doc["paths"]["/v2/health/live"]["get"]["security"] == [], "the probes need no token"
    assert "security" not in openapi(auth=False)
