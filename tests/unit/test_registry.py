"""The model registry: versions and aliases from the folder, references resolved to a version's file
and metadata (the configuration's own values winning), and what ``problems`` finds."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamscore.config import Settings
from streamscore.errors import ModelError
from streamscore.plugins import Plugins
from streamscore.registry import ModelMetadata, Registry, RegistryError
from streamscore.registry.resolve import resolve_settings
from streamscore.runners.onnx import OnnxRunner
from streamscore.service import build_runner
from tests.unit.test_graph import FEATURES, linear

KAFKA = {"bootstrap_servers": "127.0.0.1:1", "source_topics": ["in"], "destination_topic": "out",
         "dead_letter_topic": "dlq", "group_id": "g"}


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry(tmp_path / "registry")
    for version, w in (("1", 0.1), ("2", 0.2), ("10", 0.3)):
        model = linear(tmp_path / f"m{version}.onnx", [[w], [w], [w]])
        reg.publish("fraud", version, model, ModelMetadata(features=["a", "b", "c"], width=3, score_column=0,
                                                           metrics={"auc": 0.9}, tags={"owner": "risk"}))
    reg.set_alias("fraud", "production", "2")
    reg.set_alias("fraud", "shadow", "10")
    return reg


def config(registry: Registry, path: str, **model: object) -> Settings:
    return Settings.model_validate({"kafka": KAFKA, "features": FEATURES, "registry": {"root": str(registry.root)},
                                    "model": {"path": path, "provider": "cpu", "warmup_batches": 0, **model}})


def test_lists_models_versions_in_order_and_aliases(registry: Registry) -> None:
    assert registry.models() == ["fraud"]
    assert registry.versions("fraud") == ["1", "2", "10"]
    assert registry.aliases("fraud") == {"production": "2", "shadow": "10"}
    meta = registry.metadata("fraud", "10")
    assert (meta.metrics, meta.tags, meta.width) == ({"auc": 0.9}, {"owner": "risk"}, 3)


def test_an_alias_or_a_version_resolves_to_its_file_and_metadata(registry: Registry) -> None:
    by_alias = registry.resolve("registry:fraud@production")
    assert (by_alias.version, by_alias.alias) == ("2", "production")
    assert by_alias.path == registry.root / "fraud/2/model.onnx"
    assert registry.resolve("registry:fraud@1").alias is None
    registry.set_alias("fraud", "production", "10")
    assert registry.resolve("registry:fraud@production").version == "10", "a moved alias is read again"


@pytest.mark.parametrize(("ref", "error"), [
    ("registry:nope@1", "registry: no model named 'nope'"),
    ("registry:fraud@7", "registry: model 'fraud' has no version '7' (versions: 1, 2, 10)"),
    ("registry:fraud", "registry: 'registry:fraud' is not a reference"),
])
def test_a_reference_that_does_not_resolve_says_why(registry: Registry, ref: str, error: str) -> None:
    with pytest.raises(RegistryError) as info:
        registry.resolve(ref)
    assert str(info.value).startswith(error)


def test_settings_take_name_version_sha256_and_score_column_from_the_metadata(registry: Registry) -> None:
    resolved, found = resolve_settings(config(registry, "registry:fraud@production"))
    m = resolved.model
    assert m is not None and found["model"].version == "2"
    assert (m.name, m.version, m.sha256, m.score_column) == ("fraud", "2", registry.metadata("fraud", "2").sha256, 0)
    runner = build_runner(config(registry, "registry:fraud@production", version="mine"), Plugins.default())
    assert isinstance(runner, OnnxRunner)
    runner.load()
    assert (runner.name, runner.version) == ("fraud", "mine"), "the configuration's own values win"


def test_a_model_trained_on_other_features_is_refused_naming_the_key(registry: Registry, tmp_path: Path) -> None:
    registry.publish("other", "1", linear(tmp_path / "o.onnx", [[1.0]] * 3),
                     ModelMetadata(features=["a", "c", "b"], score_column=0))
    with pytest.raises(ModelError, match=r"^model.path: other@1 was trained on features \['a', 'c', 'b'\] but"):
        resolve_settings(config(registry, "registry:other@1"))
    with pytest.raises(ModelError, match=r"^model.path: model 'fraud' has no version 'x'"):
        resolve_settings(config(registry, "registry:fraud@x"))


def test_a_reference_without_a_registry_section_is_refused() -> None:
    with pytest.raises(ValueError, match=r"model.path: 'registry:fraud@production' needs a 'registry' section"):
        Settings.model_validate({"kafka": KAFKA, "features": FEATURES, "model": {"path": "registry:fraud@production"}})


def test_problems_finds_altered_files_and_dangling_aliases(registry: Registry) -> None:
    assert registry.problems("fraud") == []
    (registry.root / "fraud/1/model.onnx").write_bytes(b"not the model")
    (registry.root / "fraud/aliases.yaml").write_text("production: '2'\ncanary: '9'\n")
    problems = registry.problems("fraud")
    assert len(problems) == 2
    assert "fraud@1:" in problems[0] and "does not match the sha256" in problems[0]
    assert problems[1] == "fraud: alias 'canary' points to version '9', which does not exist"
