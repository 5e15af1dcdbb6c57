"""Shadow and canary: the canary takes a stable share of keys and decides for them (records name it),
the shadow scores the same rows into records of its own with agreement counted, never touching the
champion's records, and a failing shadow records null scores."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from streamscore.config import Settings
from streamscore.core.challengers import canary_rows
from streamscore.core.scorer import Scorer, ScoringSpec
from streamscore.metrics import Metrics
from streamscore.plugins import Plugins
from streamscore.service import build_challengers, build_runner
from tests.unit.fakes import Message
from tests.unit.test_graph import FEATURES, direct, linear, model
from tests.unit.test_registry import KAFKA

ROWS = np.random.default_rng(3).uniform(0, 2, size=(200, 3)).astype(np.float32)


@pytest.fixture
def paths(tmp_path: Path) -> dict[str, Path]:
    return {"champion": linear(tmp_path / "c.onnx", [[0.1], [0.2], [0.3]]),
            "challenger": linear(tmp_path / "x.onnx", [[0.3], [0.1], [0.2]]),
            "narrow": linear(tmp_path / "n.onnx", [[0.5], [0.5]])}


def scorer(paths: dict[str, Path], **sections: Any) -> Scorer:
    s = Settings.model_validate({"kafka": KAFKA, "features": FEATURES, "model": model(paths["champion"], version="c1"),
                                 **sections})
    runner = build_runner(s, Plugins.default())
    runner.load()
    challengers = build_challengers(s, Plugins.default())
    challengers.load()
    return Scorer(ScoringSpec.from_settings(s), runner, challengers)


def batch() -> list[Message]:
    return [Message("in", 0, i, orjson.dumps(dict(zip("abc", row, strict=True))))
            for i, row in enumerate(ROWS.tolist())]


def test_the_canary_share_is_stable_by_key() -> None:
    keys = [f"card-{i}".encode() for i in range(20_000)]
    taken = canary_rows(keys, 0.2)
    assert 0.18 < taken.mean() < 0.22
    assert (canary_rows(list(reversed(keys)), 0.2)[::-1] == taken).all(), "a key's side does not depend on its batch"
    assert taken.tolist() == [zlib.crc32(k) < 0.2 * 2**32 for k in keys]
    assert not canary_rows([None], 1.0)[0], "no key: the champion"


def test_the_canary_decides_for_its_keys_and_its_records_name_it(paths: dict[str, Path]) -> None:
    sc = scorer(paths, canary={"model": model(paths["challenger"], version="x7"), "share": 0.3})
    msgs = batch()
    result = sc.score(msgs)
    taken = canary_rows([m.key() for m in msgs], 0.3)
    assert 0 < taken.sum() < len(msgs) and result.canary_rows == taken.sum()
    records = [orjson.loads(o) for o in result.outputs]
    champion, challenger = direct(paths["champion"], ROWS), direct(paths["challenger"], ROWS)
    for i, record in enumerate(records):
        assert record["source"]["offset"] == i
        expected = (("x", "x7", challenger[i]) if taken[i] else ("c", "c1", champion[i]))
        assert (record["model"], record["model_version"]) == expected[:2]
        assert record["score"] == pytest.approx(float(expected[2]), rel=1e-6)


def test_the_shadow_scores_the_same_rows_apart_and_counts_agreement(paths: dict[str, Path]) -> None:
    plain = scorer(paths).score(batch())
    sc = scorer(paths, shadow={"model": model(paths["narrow"], version="s2", features=["b", "c"]), "topic": "sh"})
    result = sc.score(batch())
    assert [orjson.loads(o)["score"] for o in result.outputs] == [orjson.loads(o)["score"] for o in plain.outputs]
    assert result.shadow is not None and len(result.shadow.outputs) == len(result.outputs)
    shadow = direct(paths["narrow"], ROWS[:, 1:])
    records = [orjson.loads(o) for o in result.shadow.outputs]
    labels = sc.policy.indices(shadow)
    assert [r["score"] for r in records] == pytest.approx(shadow.tolist(), rel=1e-6)
    assert all(r["model"] == "n" and r["model_version"] == "s2" for r in records)
    assert [r["champion"]["decision"] for r in records] == [sc.policy.labels[d] for d in result.decisions]
    agreed = int((labels == result.decisions).sum())
    assert 0 < agreed < len(ROWS), "the fixture's models disagree on some rows"
    assert (result.shadow.compared, result.shadow.agreed) == (len(ROWS), agreed)
    metrics = Metrics()
    metrics.count_batch(len(ROWS), result, sc.policy.labels)
    assert metrics.shadow_agreement_ratio._value.get() == pytest.approx(agreed / len(ROWS))
    expected_diff = np.abs(shadow.astype(np.float64) - direct(paths["champion"], ROWS)).mean()
    assert metrics.shadow_mean_abs_difference._value.get() == pytest.approx(expected_diff, rel=1e-5)


def test_a_failing_shadow_records_null_scores_and_leaves_the_champion_alone(paths: dict[str, Path]) -> None:
    sc = scorer(paths, shadow={"model": model(paths["narrow"], features=["b", "c"]), "topic": "sh"})
    assert sc.challengers.shadow is not None

    def broken(matrix: np.ndarray) -> np.ndarray:
        raise RuntimeError("shadow down")

    sc.challengers.shadow.runner.predict = broken  # type: ignore[method-assign]
    result = sc.score(batch())
    assert len(result.scored) == len(ROWS) and not result.rejections
    assert result.shadow is not None and result.shadow.compared == 0
    assert {orjson.loads(o)["score"] for o in result.shadow.outputs} == {None}


def test_a_challenger_that_does_not_fit_is_refused_naming_its_key(paths: dict[str, Path]) -> None:
    from streamscore.errors import ModelError
    with pytest.raises(ModelError, match=r"^shadow.model.features: the spec gives 3 columns but model input 'x' "
                                         r"expects 2"):
        scorer(paths, shadow={"model": model(paths["narrow"]), "topic": "sh"})
