"""Routing by segment: each event scored by its segment's model (against direct calls), one call per
segment per batch, the default, ``no_model`` dead letters, and at most ``max_loaded`` models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from streamscore.core.records import Reason
from streamscore.core.scorer import Scorer, ScoringSpec
from streamscore.core.segments import SegmentRouter
from streamscore.metrics import Metrics
from streamscore.plugins import Plugins
from streamscore.service import build_runner
from tests.unit.fakes import Message
from tests.unit.test_graph import MATRIX, direct, linear, model, settings

COUNTRIES = ["US", "GB", "US", "DE", None]
"""The segment of each MATRIX row (None: the field is absent)."""


@pytest.fixture
def paths(tmp_path: Path) -> dict[str, Path]:
    return {n: linear(tmp_path / f"{n}.onnx", w) for n, w in
            {"us": [[0.1], [0.2], [0.3]], "gb": [[0.3], [-0.1], [0.05]], "other": [[0.5], [0.5], [0.0]]}.items()}


def router(paths: dict[str, Path], metrics: Metrics | None = None, **graph: Any) -> SegmentRouter:
    g = {"type": "segments", "field": "merchant.country", "routes": {"US": "us", "GB": "gb"}, **graph}
    names = {"us", "gb", *([g["default"]] if g.get("default") else [])}
    built = build_runner(settings(g, {n: model(paths[n]) for n in names}), Plugins.default(), metrics)
    assert isinstance(built, SegmentRouter)
    built.load()
    return built


def messages(countries: list[Any]) -> list[Message]:
    out = []
    for i, (row, country) in enumerate(zip(MATRIX.tolist(), countries, strict=True)):
        event: dict[str, Any] = dict(zip("abc", row, strict=True))
        if country is not None:
            event["merchant"] = {"country": country}
        out.append(Message("in", 0, i, orjson.dumps(event)))
    return out


def test_each_event_is_scored_by_its_segments_model_in_one_call_per_segment(paths: dict[str, Path]) -> None:
    metrics = Metrics()
    r = router(paths, metrics, default="other")
    calls: list[tuple[str, int]] = []
    for name, runner in r.runners.items():
        real = runner.predict

        def spy(matrix: np.ndarray, name: str = name, real: Any = real) -> np.ndarray:
            calls.append((name, matrix.shape[0]))
            return real(matrix)  # type: ignore[no-any-return]

        runner.predict = spy  # type: ignore[method-assign]
    batch = Scorer(_spec(r), r).score(messages(COUNTRIES))
    expected = {"US": "us", "GB": "gb", "DE": "other", None: "other"}
    records = [orjson.loads(o) for o in batch.outputs]
    assert len(records) == len(MATRIX)
    for row, (record, country) in enumerate(zip(records, COUNTRIES, strict=True)):
        name = expected[country]
        assert record["stage"] == name and record["models"] == {name: r.versions[name]}
        assert record["score"] == pytest.approx(float(direct(paths[name], MATRIX[row:row + 1])[0]), rel=1e-6)
    assert sorted(calls) == [("gb", 1), ("other", 2), ("us", 2)], "one call per segment"
    assert metrics.stage_rows.labels("us")._value.get() == 2


def _spec(r: SegmentRouter) -> ScoringSpec:
    s = settings({"type": "segments", "field": r.field, "routes": dict(r.graph.routes),
                  "default": r.graph.default},
                 {n: {"path": "x.onnx"} for n in r.targets})
    return ScoringSpec.from_settings(s)


def test_an_event_with_no_model_and_no_default_is_dead_lettered_no_model(paths: dict[str, Path]) -> None:
    r = router(paths)
    batch = Scorer(_spec(r), r).score(messages(["US", "FR", 7, "GB", None]))
    assert batch.scored == [0, 3]
    assert [(x.index, x.reason) for x in batch.rejections] == [(1, Reason.NO_MODEL), (2, Reason.NO_MODEL),
                                                                (4, Reason.NO_MODEL)]
    assert batch.rejections[0].detail == "merchant.country: no model for segment 'FR' and no default"
    assert batch.rejections[2].detail == "merchant.country: no model for segment no value and no default"


def test_integer_and_boolean_segments_match_their_text(paths: dict[str, Path]) -> None:
    r = router(paths, routes={"7": "us", "true": "gb"})
    assert r.route([7, True, "7", 7.0, None, {"x": 1}]).tolist() == [0, 1, 0, -1, -1, -1]


def test_at_most_max_loaded_models_stay_loaded_least_recently_used_unloaded(paths: dict[str, Path]) -> None:
    r = router(paths, default="other", max_loaded=2)
    assert r.loads == 3 and len(r.runners) == 2, "all checked at start, two kept"
    assert list(r.runners) == ["gb", "other"]
    scorer = Scorer(_spec(r), r)
    scorer.score(messages(["US"] * 5))
    assert list(r.runners) == ["other", "us"] and r.loads == 4, "us loaded again, gb (least recent) unloaded"
    scorer.score(messages(["DE"] * 5))
    assert list(r.runners) == ["us", "other"] and r.loads == 4, "other was loaded: only marked recent"


def test_a_route_to_an_unknown_model_is_refused_naming_the_key(paths: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=r"graph.routes.GB: unknown model 'gbx' \(models has: us\)"):
        settings({"type": "segments", "field": "m", "routes": {"US": "us", "GB": "gbx"}}, {"us": model(paths["us"])})
    with pytest.raises(ValueError, match=r"models.gb: not used by the graph"):
        settings({"type": "segments", "field": "m", "routes": {"US": "us"}},
                 {"us": model(paths["us"]), "gb": model(paths["gb"])})
