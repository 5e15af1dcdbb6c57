"""Stateful features (``core.velocity``): equal to a brute force over the same events, the same when
events are consumed again (idempotent by offset), and the settings that declare them."""

from __future__ import annotations

import random
import re
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from streamscore.config import DecisionSettings, FeatureSettings, Settings
from streamscore.core.scorer import Scorer, ScoringSpec
from streamscore.core.velocity import History, VelocityFeatures
from streamscore.errors import ConfigError
from tests.unit.fakes import FirstColumnRunner

SPECS = [
    FeatureSettings(name="n_1h", aggregate="count", key="card.id", window="1h"),
    FeatureSettings(name="sum_1d", aggregate="sum", of="amount", key="card.id", window="1d"),
    FeatureSettings(name="since", aggregate="since_last", key="card.id"),
]


class Msg:
    def __init__(self, partition: int, offset: int, ts: int) -> None:
        self.p, self.o, self.ts = partition, offset, ts

    def topic(self) -> str: return "in"
    def partition(self) -> int: return self.p
    def offset(self) -> int: return self.o
    def key(self) -> None: return None
    def value(self) -> None: return None
    def headers(self) -> None: return None
    def timestamp(self) -> tuple[int, int]: return (1, self.ts)


class Store:
    def __init__(self) -> None:
        self.data: dict[str, History] = {}
        self.writes = 0

    def get(self, message: Any, key: str) -> History | None:
        found = self.data.get(key)
        return None if found is None else [list(e) for e in found]

    def put(self, message: Any, key: str, history: History) -> None:
        self.data[key] = [list(e) for e in history]
        self.writes += 1


def stream(n: int, seed: int) -> tuple[list[Msg], list[dict[str, Any]]]:
    rng = random.Random(seed)
    msgs, events, offsets = [], [], [0, 0]
    for i in range(n):
        p = rng.randrange(2)
        msgs.append(Msg(p, offsets[p], 1_000_000_000 + i * 600_000 + rng.randrange(-900_000, 900_000)))
        offsets[p] += 1
        events.append({"card": {"id": f"c{rng.randrange(4)}"}, "amount": rng.choice([1, 2.5, 10])})
    return msgs, events


def brute_force(msgs: list[Msg], events: list[dict[str, Any]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"n_1h": [], "sum_1d": [], "since": []}
    for m, e in zip(msgs, events, strict=True):
        same = [(o, ev) for o, ev in zip(msgs, events, strict=True)
                if o.p == m.p and ev["card"]["id"] == e["card"]["id"] and o.o <= m.o]
        out["n_1h"].append(sum(1 for o, _ in same if m.ts - 3_600_000 < o.ts <= m.ts))
        out["sum_1d"].append(sum(ev["amount"] for o, ev in same if m.ts - 86_400_000 < o.ts <= m.ts))
        earlier = [o for o, _ in same if o.o < m.o]
        out["since"].append((m.ts - max(earlier, key=lambda o: o.o).ts) / 1000 if earlier else -1.0)
    return out


def computed(velocity: VelocityFeatures, msgs: list[Msg], events: list[dict[str, Any]], batch: int
             ) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"n_1h": [], "sum_1d": [], "since": []}
    for start in range(0, len(msgs), batch):
        columns = velocity.compute(msgs[start:start + batch], events[start:start + batch])
        for name, values in columns.items():
            out[name].extend(values.tolist())
    return out


def close(a: dict[str, list[float]], b: dict[str, list[float]]) -> bool:
    return all(np.array_equal(np.array(a[k], dtype=np.float32), np.array(b[k], dtype=np.float32)) for k in a)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 60), st.integers(0, 10_000))
def test_equal_to_brute_force_whatever_the_batch_size(batch: int, seed: int) -> None:
    msgs, events = stream(150, seed)
    assert close(computed(VelocityFeatures(SPECS, Store(), 3600), msgs, events, batch), brute_force(msgs, events))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 149), st.integers(1, 60), st.integers(0, 10_000))
def test_events_consumed_again_after_a_crash_get_the_values_they_had(done: int, back: int, seed: int) -> None:
    """The state holds the first ``done`` events; the restart consumes again from up to ``back`` earlier."""
    msgs, events = stream(150, seed)
    store = Store()
    computed(VelocityFeatures(SPECS, store, 86400), msgs[:done], events[:done], 7)
    redo = max(0, done - back)
    again = computed(VelocityFeatures(SPECS, store, 86400), msgs[redo:], events[redo:], 11)
    expected = brute_force(msgs, events)
    assert close(again, {k: v[redo:] for k, v in expected.items()})


def test_a_key_is_written_once_per_batch_and_old_entries_are_pruned() -> None:
    msgs, events = stream(200, 3)
    store = Store()
    velocity = VelocityFeatures(SPECS, store, 0)
    velocity.compute(msgs, events)
    assert store.writes == len({(m.p, e["card"]["id"]) for m, e in zip(msgs, events, strict=True)})
    span_ms = 86_400_000 + 2 * 900_000
    for history in store.data.values():
        assert history[-1][1] - history[0][1] <= span_ms, "entries older than the longest window are dropped"


def base(**extra: Any) -> dict[str, Any]:
    return {"kafka": {"source_topics": ["in"], "destination_topic": "out", "dead_letter_topic": "dlq"},
            "model": {"path": "m.onnx"}, **extra}


def test_stateful_features_need_the_faust_engine() -> None:
    feature = {"name": "n", "aggregate": "count", "key": "card.id", "window": "1h"}
    with pytest.raises(ValidationError, match=r"features\[0\].aggregate: stateful features need 'engine: faust'"):
        Settings(**base(features=[feature]))
    assert Settings(**base(features=[feature], engine="faust")).features[0].window_s == 3600


@pytest.mark.parametrize(("feature", "message"), [
    ({"aggregate": "count", "window": "1h"}, "needs a 'key'"),
    ({"aggregate": "count", "key": "k"}, "'window' goes with"),
    ({"aggregate": "since_last", "key": "k", "window": "1h"}, "'window' goes with"),
    ({"aggregate": "sum", "key": "k", "window": "1h"}, "'of'"),
    ({"aggregate": "count", "key": "k", "window": "1 hour"}, "expected a number and a unit"),
    ({"aggregate": "count", "key": "k", "window": "1h", "path": "x"}, "computed, not read"),
    ({"key": "k"}, "only for stateful features"),
])
def test_stateful_settings_are_checked(feature: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FeatureSettings(name="f", **feature)


def test_the_scorer_feeds_stateful_columns_to_the_model_and_can_copy_them_into_outputs() -> None:
    specs = [FeatureSettings(name="amount"), *SPECS]
    spec = ScoringSpec(specs, DecisionSettings(), copy_fields=("n_1h", "since"))
    runner = FirstColumnRunner()
    seen: list[np.ndarray] = []
    predict = runner.predict

    def spy(matrix: np.ndarray) -> np.ndarray:
        seen.append(matrix.copy())
        return predict(matrix)

    runner.predict = spy  # type: ignore[method-assign]
    msgs, events = stream(20, 5)
    wire = [WireMsg(m, orjson.dumps(e)) for m, e in zip(msgs, events, strict=True)]
    wire[3] = WireMsg(msgs[3], orjson.dumps({"amount": 1}))  # no card.id: dead-lettered, not counted
    result = Scorer(spec, runner, state=VelocityFeatures(SPECS, Store(), 3600)).score(wire)

    assert [r.index for r in result.rejections] == [3] and result.rejections[0].detail.startswith("card.id")
    kept = [i for i in range(20) if i != 3]
    expected = brute_force([msgs[i] for i in kept], [events[i] for i in kept])
    assert np.array_equal(seen[0][:, 1], np.array(expected["n_1h"], dtype=np.float32))
    assert np.array_equal(seen[0][:, 3], np.array(expected["since"], dtype=np.float32))
    first = orjson.loads(result.outputs[0])
    assert first["n_1h"] == expected["n_1h"][0] and first["since"] == expected["since"][0]


class WireMsg(Msg):
    def __init__(self, m: Msg, value: bytes) -> None:
        super().__init__(m.p, m.o, m.ts)
        self._value = value

    def value(self) -> bytes:  # type: ignore[override]
        return self._value


def test_the_faust_engine_refuses_what_it_cannot_do() -> None:
    from streamscore.engines.faust_app import check_settings

    def faust(**extra: Any) -> Settings:
        return Settings(**base(features=[{"name": "amount"}], engine="faust", **extra))

    check_settings(faust())
    check_settings(faust(delivery="exactly_once"))
    kafka = base()["kafka"]
    refused: list[tuple[dict[str, Any], str]] = [
        ({"delivery": "exactly_once", "kafka": {**kafka, "transactional_id": "tx-1"}}, "kafka.transactional_id"),
        ({"kafka": {**kafka, "client": {"security.protocol": "SSL"}}}, "kafka.client"),
        ({"kafka": {**kafka, "consumer": {"fetch.min.bytes": "1"}}}, "kafka.consumer.fetch.min.bytes"),
        ({"destinations": [{"kind": "postgres"}]}, "destinations[0].kind"),
    ]
    for bad, key in refused:
        with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: "):
            check_settings(faust(**bad))
