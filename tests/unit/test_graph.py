"""Model graphs: every combine rule, the gated cascade and the chain against direct model calls;
configuration and load errors naming the key; score records that say who decided."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import orjson
import pytest
from onnx import TensorProto, helper

from streamscore.config import Settings
from streamscore.core.graph import ModelGraph
from streamscore.core.scorer import Scorer, ScoringSpec
from streamscore.errors import ModelError
from streamscore.metrics import Metrics
from streamscore.plugins import Plugins
from streamscore.runners.onnx import OnnxRunner
from streamscore.service import build_runner
from tests.unit.fakes import Message

FEATURES = [{"name": "a"}, {"name": "b"}, {"name": "c"}]


def linear(path: Path, weights: list[list[float]], elem: int = TensorProto.FLOAT) -> Path:
    """x [None, in] -> x @ W [None, out] (in = len(weights)), input cast from ``elem``."""
    w = np.asarray(weights, dtype=np.float32)
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["xf", "w"], ["y"])]
    graph = helper.make_graph(
        nodes, "linear", [helper.make_tensor_value_info("x", elem, [None, w.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, w.shape[1]])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, list(w.shape), w.ravel().tolist())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def settings(graph: dict[str, Any], models: dict[str, dict[str, Any]]) -> Settings:
    return Settings.model_validate({
        "kafka": {"bootstrap_servers": "127.0.0.1:1", "source_topics": ["in"], "destination_topic": "out",
                  "dead_letter_topic": "dlq", "group_id": "g"},
        "features": FEATURES, "models": models, "graph": graph})


def model(path: Path, **extra: Any) -> dict[str, Any]:
    return {"path": str(path), "score_column": 0, "warmup_batches": 0, "provider": "cpu", **extra}


@pytest.fixture
def paths(tmp_path: Path) -> dict[str, Path]:
    return {
        "a": linear(tmp_path / "a.onnx", [[0.1], [0.2], [0.3]]),
        "b": linear(tmp_path / "b.onnx", [[0.3], [-0.1], [0.05]]),
        "c": linear(tmp_path / "c.onnx", [[0.5], [0.5], [0.0]]),
        "meta": linear(tmp_path / "meta.onnx", [[0.25], [0.75]]),
    }


def direct(path: Path, x: np.ndarray) -> np.ndarray:
    runner = OnnxRunner(settings({"type": "chain", "stages": ["m", "n"]},
                                 {"m": model(path), "n": model(path)}).models["m"], x.shape[1])
    runner.load()
    return runner.predict(np.ascontiguousarray(x, dtype=np.float32))


def loaded(s: Settings, metrics: Metrics | None = None) -> ModelGraph:
    graph = build_runner(s, Plugins.default(), metrics)
    assert isinstance(graph, ModelGraph)
    graph.load()
    return graph


MATRIX = np.array([[1, 2, 3], [0, 0, 1], [4, 1, 0], [2, 2, 2], [0.5, 0.1, 0.2]], dtype=np.float32)


@pytest.mark.parametrize(("combine", "extra", "expect"), [
    ("mean", {}, lambda a, b: (a + b) / 2),
    ("weighted_mean", {"weights": [1.0, 3.0]}, lambda a, b: (a + 3 * b) / 4),
    ("max", {}, np.maximum),
    ("min", {}, np.minimum),
])
def test_ensemble_combines_the_members_direct_scores(paths: dict[str, Path], combine: str, extra: dict[str, Any],
                                                     expect: Any) -> None:
    s = settings({"type": "ensemble", "members": ["a", "b"], "combine": combine, **extra},
                 {"a": model(paths["a"]), "b": model(paths["b"])})
    got = loaded(s).predict(MATRIX)
    np.testing.assert_allclose(got, expect(direct(paths["a"], MATRIX), direct(paths["b"], MATRIX)), rtol=1e-6)


def test_stacking_feeds_the_members_scores_to_the_meta_model(paths: dict[str, Path]) -> None:
    s = settings({"type": "ensemble", "members": ["a", "b"], "combine": "stacking", "meta": "meta"},
                 {"a": model(paths["a"]), "b": model(paths["b"]), "meta": model(paths["meta"])})
    graph = loaded(s)
    base = np.stack([direct(paths["a"], MATRIX), direct(paths["b"], MATRIX)], axis=1)
    np.testing.assert_allclose(graph.predict(MATRIX), direct(paths["meta"], base), rtol=1e-6)
    assert graph.stages[0].name == "meta" and set(graph.stages[0].models) == {"a", "b", "meta"}


def test_vote_takes_the_majority_label_and_a_score_in_its_band(paths: dict[str, Path]) -> None:
    s = settings({"type": "ensemble", "members": ["a", "b", "c"], "combine": "vote"},
                 {n: model(paths[n]) for n in "abc"})
    graph = loaded(s)
    members = np.stack([direct(paths[n], MATRIX) for n in "abc"], axis=1)
    scores = graph.predict(MATRIX)
    labels = graph.policy.indices(members.ravel()).reshape(members.shape)
    for row, votes in enumerate(labels.tolist()):
        counts = [votes.count(i) for i in range(3)]
        winner = max(range(3), key=lambda i: (counts[i], i))  # a tie goes to the stricter label
        assert graph.policy.indices(scores[row:row + 1])[0] == winner
        expected = np.mean([m for m, v in zip(members[row], votes, strict=True) if v == winner])
        assert scores[row] == pytest.approx(expected, rel=1e-6)


def test_cascade_sends_only_the_gated_rows_to_the_second_stage(paths: dict[str, Path]) -> None:
    s = settings({"type": "cascade", "stages": ["a", "b"], "band": [0.5, 1.0]},
                 {"a": model(paths["a"]), "b": model(paths["b"])})
    metrics = Metrics()
    graph = loaded(s, metrics)
    seen: list[np.ndarray] = []
    second = graph.runners["b"]
    real = second.predict

    def spy(matrix: np.ndarray) -> np.ndarray:
        seen.append(matrix.copy())
        return real(matrix)

    second.predict = spy  # type: ignore[method-assign]
    first = direct(paths["a"], MATRIX)
    gated = (first >= 0.5) & (first <= 1.0)
    assert 0 < gated.sum() < len(MATRIX), "the fixture gates some rows, not all"
    scores, stages = graph.predict_staged(MATRIX)
    np.testing.assert_array_equal(seen[0], MATRIX[gated])
    np.testing.assert_allclose(scores, np.where(gated, direct(paths["b"], MATRIX), first), rtol=1e-6)
    assert stages.tolist() == gated.astype(int).tolist()
    assert metrics.stage_rows.labels("a")._value.get() == len(MATRIX)
    assert metrics.stage_rows.labels("b")._value.get() == gated.sum()


def test_chain_appends_a_stages_outputs_to_the_next_input(tmp_path: Path) -> None:
    a = linear(tmp_path / "a2.onnx", [[1.0, 0.0], [0.0, 1.0]])  # reads a, b: outputs both
    b = linear(tmp_path / "b3.onnx", [[0.5], [0.25], [2.0]])   # reads c plus the 2 outputs of a
    s = settings({"type": "chain", "stages": ["a", "b"]},
                 {"a": model(a, features=["a", "b"]), "b": model(b, features=["c"])})
    got = loaded(s).predict(MATRIX)
    upstream = MATRIX[:, :2] @ np.eye(2, dtype=np.float32)
    np.testing.assert_allclose(got, direct(b, np.hstack([MATRIX[:, 2:], upstream])), rtol=1e-6)


def test_a_model_reads_only_its_own_features(paths: dict[str, Path], tmp_path: Path) -> None:
    two = linear(tmp_path / "two.onnx", [[1.0], [10.0]])
    s = settings({"type": "ensemble", "members": ["a", "two"], "combine": "max"},
                 {"a": model(paths["a"]), "two": model(two, features=["c", "a"])})
    got = loaded(s).predict(MATRIX)
    np.testing.assert_allclose(got, np.maximum(direct(paths["a"], MATRIX), MATRIX[:, 2] + 10 * MATRIX[:, 0]),
                               rtol=1e-6)


@pytest.mark.parametrize(("graph", "names", "error"), [
    ({"type": "ensemble", "members": ["a", "x"]}, "ab", "graph.members[1]: unknown model 'x' (models has: a, b)"),
    ({"type": "chain", "stages": ["a", "b", "a"]}, "ab", "graph.stages[2]: model 'a' appears twice in the graph"),
    ({"type": "cascade", "stages": ["a", "b"], "band": [0.2, 0.8]}, "abc", "models.c: not used by the graph"),
    ({"type": "ensemble", "members": ["a", "b"], "combine": "stacking", "meta": "a"}, "ab",
     "graph.meta: model 'a' appears twice in the graph (a cycle)"),
    ({"type": "cascade", "stages": ["a", "b"], "band": [0.8, 0.2]}, "ab", "graph.band: band must be [lo, hi]"),
    ({"type": "ensemble", "members": ["a", "b"], "combine": "weighted_mean"}, "ab",
     "graph: weighted_mean needs one weight per member"),
])
def test_graph_names_are_checked_with_one_line_naming_the_key(paths: dict[str, Path], graph: dict[str, Any],
                                                                names: str, error: str) -> None:
    from streamscore.config import load_settings
    from streamscore.errors import ConfigError
    raw = {"kafka": {"bootstrap_servers": "x:1", "source_topics": ["in"], "destination_topic": "out",
                     "dead_letter_topic": "dlq", "group_id": "g"},
           "features": FEATURES, "models": {n: model(paths[n]) for n in names}, "graph": graph}
    config = paths["a"].parent / "graph.yaml"
    config.write_bytes(orjson.dumps(raw))
    with pytest.raises(ConfigError) as info:
        load_settings(config, env={})
    assert str(info.value).startswith(error)
    assert "\n" not in str(info.value)


def test_unknown_feature_and_model_with_models_are_refused(paths: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=r"models.b.features\[0\]: unknown feature 'z'"):
        settings({"type": "ensemble", "members": ["a", "b"]}, {"a": model(paths["a"]),
                                                               "b": model(paths["b"], features=["z"])})


@pytest.mark.parametrize(("case", "error"), [
    ("width", "models.b.features: the spec gives 2 columns but model input 'x' expects 3"),
    ("meta", "models.meta.features: the spec gives 2 columns but model input 'x' expects 3 (a stacking meta"),
    ("dtype", "models.b.input: input 'x' has dtype tensor(int64)"),
    ("chain", "models.b.features: the spec gives 3 columns but model input 'x' expects 2 (its features plus 1"),
])
def test_load_checks_widths_and_dtypes_naming_the_model(paths: dict[str, Path], tmp_path: Path, case: str,
                                                       error: str) -> None:
    three = linear(tmp_path / "three.onnx", [[1.0], [1.0], [1.0]])
    graphs = {
        "width": ({"type": "ensemble", "members": ["a", "b"]},
                  {"a": model(paths["a"]), "b": model(three, features=["a", "b"])}),
        "meta": ({"type": "ensemble", "members": ["a", "b"], "combine": "stacking", "meta": "meta"},
                 {"a": model(paths["a"]), "b": model(paths["b"]), "meta": model(three)}),
        "dtype": ({"type": "ensemble", "members": ["a", "b"]},
                  {"a": model(paths["a"]), "b": model(linear(tmp_path / "i.onnx", [[1.0]] * 3, TensorProto.INT64))}),
        "chain": ({"type": "chain", "stages": ["a", "b"]},
                  {"a": model(paths["a"]), "b": model(linear(tmp_path / "w2.onnx", [[1.0]] * 2), features=["a", "b"])}),
    }
    with pytest.raises(ModelError) as info:
        loaded(settings(*graphs[case]))
    assert str(info.value).startswith(error), str(info.value)


def test_records_say_which_stage_decided_and_the_model_versions(paths: dict[str, Path]) -> None:
    s = settings({"type": "cascade", "stages": ["a", "b"], "band": [0.5, 1.0]},
                 {"a": model(paths["a"], version="v1"), "b": model(paths["b"], version="v2")})
    graph = loaded(s)
    messages = [Message("in", 0, i, orjson.dumps(dict(zip("abc", row, strict=True))))
                for i, row in enumerate(MATRIX.tolist())]
    batch = Scorer(ScoringSpec.from_settings(s), graph).score(messages)
    first = direct(paths["a"], MATRIX)
    records = [orjson.loads(r) for r in batch.outputs]
    for record, score in zip(records, first.tolist(), strict=True):
        if 0.5 <= score <= 1.0:
            assert (record["stage"], record["models"]) == ("b", {"a": "v1", "b": "v2"})
        else:
            assert (record["stage"], record["models"]) == ("a", {"a": "v1"})
            assert record["score"] == pytest.approx(score)
        assert record["model"] == "cascade:a+b" and record["model_version"] == "a=v1,b=v2"
