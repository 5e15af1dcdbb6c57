"""The synthetic transaction generator: determinism, schema, labels, malformed values, keys."""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from typing import Any

import numpy as np
import orjson
import pytest

from streamscore.demo.transactions import (
    CATEGORIES,
    COUNTRIES,
    MALFORMED_KINDS,
    OTHER_COUNTRIES,
    OVERSIZE_MIN_BYTES,
    TransactionGenerator,
)

TX_ID = re.compile(r"tx-[0-9a-f]{16}")
NOW_MS = 1_750_000_000_000


def check_event(event: dict[str, Any]) -> None:
    """Every field of a valid event, with its type and range."""
    assert list(event)[:7] == [
        "transaction_id", "event_time", "amount", "currency", "card", "merchant", "hour"
    ]
    assert set(event) <= {*list(event)[:7], "activity"}
    assert TX_ID.fullmatch(event["transaction_id"])
    assert type(event["event_time"]) is int and event["event_time"] > 1_700_000_000_000
    amount = event["amount"]
    assert type(amount) is float and 0.5 <= amount <= 20_000 and round(amount, 2) == amount
    assert event["currency"] == "USD"
    card = event["card"]
    assert set(card) == {"id", "present", "age_days"}
    assert re.fullmatch(r"card-\d{6}", card["id"])
    assert type(card["present"]) is bool
    assert type(card["age_days"]) is int and 0 <= card["age_days"] <= 7300
    merchant = event["merchant"]
    assert set(merchant) == {"id", "category", "country"}
    assert re.fullmatch(r"m-\d{5}", merchant["id"])
    assert merchant["category"] in CATEGORIES
    assert merchant["country"] in COUNTRIES + OTHER_COUNTRIES
    assert type(event["hour"]) is int and 0 <= event["hour"] <= 23
    activity = event.get("activity", {})
    assert set(activity) <= {"tx_1h", "tx_24h"}
    for value in activity.values():
        assert type(value) is int and value >= 0
    if len(activity) == 2:
        assert activity["tx_24h"] >= activity["tx_1h"]


def test_same_seed_same_stream() -> None:
    a, b = TransactionGenerator(seed=11), TransactionGenerator(seed=11)
    events_a, labels_a = a.labelled(3000)
    events_b, labels_b = b.labelled(3000)
    assert events_a == events_b
    assert np.array_equal(labels_a, labels_b)
    assert a.events(500) == b.events(500)  # and it goes on identically
    assert a.encoded(500, now_ms=NOW_MS) == b.encoded(500, now_ms=NOW_MS)


def test_malformed_values_are_deterministic_too() -> None:
    a = TransactionGenerator(seed=3, malformed_rate=0.3)
    b = TransactionGenerator(seed=3, malformed_rate=0.3)
    assert a.encoded(400, now_ms=NOW_MS) == b.encoded(400, now_ms=NOW_MS)


def test_other_seed_other_stream() -> None:
    a = TransactionGenerator(seed=1).events(50)
    b = TransactionGenerator(seed=2).events(50)
    assert {e["transaction_id"] for e in a}.isdisjoint(e["transaction_id"] for e in b)
    assert [e["amount"] for e in a] != [e["amount"] for e in b]


def test_valid_events_follow_the_schema() -> None:
    events = TransactionGenerator(seed=5).events(5000)
    for event in events:
        check_event(event)
    times = [e["event_time"] for e in events]
    assert times == sorted(times)
    # Optional keys are sometimes absent; unknown countries occur; every category occurs.
    assert any("activity" not in e for e in events)
    assert any("activity" in e and len(e["activity"]) < 2 for e in events)
    assert sum("activity" in e and len(e["activity"]) == 2 for e in events) > 0.9 * len(events)
    assert any(e["merchant"]["country"] not in COUNTRIES for e in events)
    assert {e["merchant"]["category"] for e in events} == set(CATEGORIES)


def test_labels_are_binary_with_a_small_fraud_rate() -> None:
    events, labels = TransactionGenerator(seed=8).labelled(20_000)
    assert labels.shape == (20_000,) and len(events) == 20_000
    assert set(np.unique(labels).tolist()) == {0, 1}
    assert 0.02 <= labels.mean() <= 0.04


def test_fraud_carries_signal() -> None:
    events, labels = TransactionGenerator(seed=9).labelled(30_000)
    fraud = labels == 1
    present = np.array([e["card"]["present"] for e in events])
    amount = np.array([e["amount"] for e in events])
    assert present[fraud].mean() < present[~fraud].mean() - 0.2
    assert np.median(amount[fraud]) > np.median(amount[~fraud])


def test_empty_requests() -> None:
    generator = TransactionGenerator()
    events, labels = generator.labelled(0)
    assert events == [] and labels.shape == (0,)
    assert generator.encoded(0) == []


def test_encoded_values_are_the_events_with_the_time_stamped() -> None:
    pairs = TransactionGenerator(seed=4).encoded(3000, now_ms=NOW_MS)
    events = TransactionGenerator(seed=4).events(3000)
    for (key, value), event in zip(pairs, events, strict=True):
        event["event_time"] = NOW_MS
        assert value == orjson.dumps(event)
        assert key == event["transaction_id"].encode()


def test_encoded_defaults_to_the_current_time() -> None:
    before = int(time.time() * 1000)
    pairs = TransactionGenerator(seed=4).encoded(10)
    after = int(time.time() * 1000)
    for _, value in pairs:
        assert before <= orjson.loads(value)["event_time"] <= after


def test_keys_are_unique_across_calls() -> None:
    generator = TransactionGenerator(seed=6, malformed_rate=0.05)
    keys = [key for _ in range(3) for key, _ in generator.encoded(20_000, now_ms=NOW_MS)]
    keys += [e["transaction_id"].encode() for e in generator.events(20_000)]
    assert len(set(keys)) == len(keys) == 80_000
    assert all(TX_ID.fullmatch(key.decode()) for key in keys)


def classify(value: bytes) -> str:
    """Which malformed kind a value is (or "valid"), judged from the bytes alone."""
    if len(value) > 1_000_000:
        return "oversize"
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        if not value.startswith(b"{"):
            return "not_json"
        if re.search(rb'"amount":-?(NaN|Infinity|1e999)', value):
            return "non_finite"
        return "truncated_json"
    if not isinstance(event, dict):
        return "not_object"
    card, merchant = event.get("card"), event.get("merchant")
    if (
        "amount" not in event or "hour" not in event or not isinstance(card, dict)
        or "present" not in card or "age_days" not in card
        or not isinstance(merchant, dict) or "category" not in merchant or "country" not in merchant
    ):
        return "missing_field"
    try:
        check_event(event)
    except AssertionError:
        return "wrong_type"
    return "valid"


def test_every_malformed_kind_appears_at_a_high_rate() -> None:
    generator = TransactionGenerator(seed=12, malformed_rate=1.0)
    pairs = generator.encoded(200, now_ms=NOW_MS)
    kinds = Counter(classify(value) for _, value in pairs)
    assert set(kinds) == set(MALFORMED_KINDS), kinds
    assert kinds["oversize"] <= len(pairs) / 20
    assert all(TX_ID.fullmatch(key.decode()) for key, _ in pairs)
    assert len({key for key, _ in pairs}) == len(pairs)


def test_malformed_values_are_rare_at_a_low_rate() -> None:
    pairs = TransactionGenerator(seed=13, malformed_rate=0.02).encoded(10_000, now_ms=NOW_MS)
    kinds = Counter(classify(value) for _, value in pairs)
    broken = len(pairs) - kinds["valid"]
    assert 100 <= broken <= 300


def test_oversize_values_exceed_a_million_bytes() -> None:
    pairs = TransactionGenerator(seed=14, malformed_rate=1.0).encoded(100, now_ms=NOW_MS)
    sizes = [len(value) for _, value in pairs if len(value) > 100_000]
    assert sizes, "no oversize value among 100 malformed ones"
    for size in sizes:
        assert 1_000_000 < OVERSIZE_MIN_BYTES <= size <= OVERSIZE_MIN_BYTES + 4096
    big = next(value for _, value in pairs if len(value) > 100_000)
    assert isinstance(orjson.loads(big), dict)  # valid JSON: only its size is wrong


def test_non_finite_amounts_are_spelled_in_raw_text() -> None:
    pairs = TransactionGenerator(seed=15, malformed_rate=1.0).encoded(300, now_ms=NOW_MS)
    spelled = {
        m.group(1) for _, value in pairs if (m := re.search(rb'"amount":(-?(?:NaN|Infinity|1e999))', value))
    }
    assert {b"NaN", b"1e999", b"-Infinity"} <= spelled
    assert math.isinf(float(b"1e999"))


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_rejects_a_malformed_rate_outside_0_1(rate: float) -> None:
    with pytest.raises(ValueError, match="malformed_rate"):
        TransactionGenerator(malformed_rate=rate)
