"""Hot reload: a moved alias or a changed file loads a new runner beside the serving one; a failing
version is logged on one line, counted, and not retried until something changes; the scorer swaps
runners between batches and its records name the version that scored them."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import orjson
import pytest

from streamscore.config import Settings
from streamscore.core.scorer import Scorer, ScoringSpec
from streamscore.metrics import Metrics
from streamscore.plugins import Plugins
from streamscore.registry import ModelMetadata, Registry
from streamscore.reload import Models, Reloader
from streamscore.service import build_challengers, build_runner
from tests.unit.fakes import Message
from tests.unit.test_graph import linear
from tests.unit.test_registry import KAFKA, config


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry(tmp_path / "registry")
    for version, weights in (("1", [[0.1]] * 3), ("2", [[0.2]] * 3), ("3", [[0.2]] * 2)):  # 3: the wrong width
        reg.publish("fraud", version, linear(tmp_path / f"m{version}.onnx", weights), ModelMetadata(score_column=0))
    reg.set_alias("fraud", "production", "1")
    return reg


def reloader(s: Settings, metrics: Metrics) -> Reloader:
    return Reloader(s, lambda: Models(build_runner(s, Plugins.default(), metrics),
                                      build_challengers(s, Plugins.default())), metrics)


def test_a_moved_alias_loads_the_new_version_once(registry: Registry) -> None:
    metrics = Metrics()
    r = reloader(config(registry, "registry:fraud@production"), metrics)
    assert not r.check() and r.take() is None, "nothing changed"
    registry.set_alias("fraud", "production", "2")
    assert r.check()
    models = r.take()
    assert models is not None and models.runner.version == "2"
    assert r.take() is None and not r.check(), "handed over once; the new state is now the current one"


def test_a_failing_version_is_logged_counted_and_not_retried_until_forced(
        registry: Registry, caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    r = reloader(config(registry, "registry:fraud@production"), metrics)
    registry.set_alias("fraud", "production", "3")
    with caplog.at_level(logging.ERROR, "streamscore.reload"):
        assert not r.check()
    (line,) = [rec.getMessage() for rec in caplog.records]
    assert line == ("model reload failed (model: fraud@3), the serving version stays: features: the spec gives 3 "
                    "columns but model input 'x' expects 2")
    assert metrics.model_reloads.labels("failed")._value.get() == 1
    assert r.take() is None
    assert not r.check() and metrics.model_reloads.labels("failed")._value.get() == 1, "same state: not retried"
    assert not r.check(forced=True) and metrics.model_reloads.labels("failed")._value.get() == 2


def test_a_changed_file_is_reloaded(tmp_path: Path) -> None:
    path = linear(tmp_path / "m.onnx", [[0.1]] * 3)
    s = Settings.model_validate({"kafka": KAFKA, "features": [{"name": n} for n in "abc"],
                                 "model": {"path": str(path), "score_column": 0, "warmup_batches": 0}})
    r = reloader(s, Metrics())
    linear(tmp_path / "new.onnx", [[0.3]] * 3).replace(path)
    os.utime(path, ns=(1, 1))  # a different modification time even on a coarse clock
    assert r.check()
    models = r.take()
    assert models is not None and models.runner.version.startswith("sha256:")


def test_records_after_a_swap_name_the_new_version(registry: Registry) -> None:
    s = config(registry, "registry:fraud@production")
    old = build_runner(s, Plugins.default())
    old.load()
    scorer = Scorer(ScoringSpec.from_settings(s), old)
    batch = [Message("in", 0, i, orjson.dumps({"a": 1, "b": 2, "c": i})) for i in range(4)]
    before = [orjson.loads(o) for o in scorer.score(batch).outputs]
    registry.set_alias("fraud", "production", "2")
    new = build_runner(s, Plugins.default())
    new.load()
    assert scorer.swap(new) is old
    after = [orjson.loads(o) for o in scorer.score(batch).outputs]
    assert {r["model_version"] for r in before} == {"1"} and {r["model_version"] for r in after} == {"2"}
    assert [r["score"] for r in after] == pytest.approx([2 * r["score"] for r in before], rel=1e-6)


def test_a_moved_shadow_alias_reloads_the_shadow_too(registry: Registry) -> None:
    s = Settings.model_validate({
        "kafka": KAFKA, "features": [{"name": n} for n in "abc"], "registry": {"root": str(registry.root)},
        "model": {"path": "registry:fraud@production", "provider": "cpu", "warmup_batches": 0},
        "shadow": {"model": {"path": "registry:fraud@shadow", "provider": "cpu", "warmup_batches": 0}, "topic": "sh"}})
    registry.set_alias("fraud", "shadow", "1")
    r = reloader(s, Metrics())
    registry.set_alias("fraud", "shadow", "2")
    assert r.check()
    models = r.take()
    assert models is not None and models.challengers.shadow is not None
    assert (models.runner.version, models.challengers.shadow.runner.version) == ("1", "2")
