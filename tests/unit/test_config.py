"""Settings: YAML, environment overrides, one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streamscore.config import apply_env_overrides, load_settings
from streamscore.errors import ConfigError

DEMO = Path(__file__).resolve().parents[2] / "streamscore" / "demo" / "config.yaml"


def write(tmp_path: Path, mutate: object = None) -> Path:
    config = yaml.safe_load(DEMO.read_text())
    if callable(mutate):
        mutate(config)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_env_overrides_nested_keys_and_passthrough_maps(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path), env={
        "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": "broker:9093",
        "STREAMSCORE_BATCHING__MAX_BATCH_SIZE": "64",
        "STREAMSCORE_KAFKA__SOURCE_TOPICS": "[a, b]",
        "STREAMSCORE_KAFKA__CLIENT__SASL_PASSWORD": "s3cret",
        "STREAMSCORE_KAFKA__PRODUCER__LINGER_MS": "7",
        "OTHER": "ignored",
    })
    assert s.kafka.bootstrap_servers == "broker:9093"
    assert s.batching.max_batch_size == 64
    assert s.kafka.source_topics == ["a", "b"]
    assert s.kafka.client["sasl.password"] == "s3cret"
    assert s.kafka.producer["linger.ms"] == 7


def test_relative_model_path_is_resolved_against_the_config_file(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path))
    assert s.model.path == (tmp_path / "fraud_model.onnx").resolve()


def test_environment_alone_can_build_a_config() -> None:
    raw: dict[str, object] = {}
    apply_env_overrides(raw, {"STREAMSCORE_MODEL__PATH": "/m.onnx", "STREAMSCORE_LOG_LEVEL": "DEBUG"})
    assert raw == {"model": {"path": "/m.onnx"}, "log_level": "DEBUG"}


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda c: c["batching"].update(max_batch=1), "batching.max_batch: unknown key (expected one of: max_batch_size"),
    (lambda c: c["kafka"].pop("destination_topic"), "kafka.destination_topic: required key is missing"),
    (lambda c: c["batching"].update(max_wait_ms="soon"), "batching.max_wait_ms: "),
    (lambda c: c["features"].append(dict(c["features"][0])), "features: duplicate feature names ['amount']"),
    (lambda c: c["decisions"].update(rules=[{"label": "a", "min_score": 0.9}, {"label": "b", "min_score": 0.5}]),
     "decisions.rules: rule thresholds must be strictly ascending"),
    (lambda c: c["output"].update(copy_fields=["score"]), "output.copy_fields: ['score'] are names"),
    (lambda c: c["features"][1].update(bogus=1), "features[1].bogus: unknown key"),
    (lambda c: c["kafka"].update(dead_letter_topic=c["kafka"]["destination_topic"]), "kafka: source, destination"),
])
def test_errors_are_one_line_and_name_the_key(tmp_path: Path, mutate: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, mutate), env={})
    text = str(err.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(tmp_path / "missing.yaml", env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_settings(bad, env={})
