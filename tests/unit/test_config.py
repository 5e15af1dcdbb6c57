"""Settings: YAML, ``STREAMSCORE_*`` environment overrides, one-line errors that name the key."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from streamscore.config import (
    FeatureSettings,
    KafkaSettings,
    Settings,
    apply_env_overrides,
    describe_validation_error,
    load_settings,
)
from streamscore.errors import ConfigError, ModelError, StreamScoreError

DEMO = Path(__file__).resolve().parents[2] / "streamscore" / "demo" / "config.yaml"
BASE: dict[str, Any] = yaml.safe_load(DEMO.read_text())

Mutate = Callable[[dict[str, Any]], object]
WriteConfig = Callable[..., Path]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """A copy of the demo config, changed by ``mutate``, written as ``name`` under tmp_path."""

    def write(mutate: Mutate | None = None, name: str = "config.yaml") -> Path:
        config = copy.deepcopy(BASE)
        if mutate is not None:
            mutate(config)
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config))
        return path

    return write


def config_error(path: Path | str | None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={} if env is None else env)
    text = str(err.value)
    assert "\n" not in text, "one line"
    assert err.value.__cause__ is None, "no chained traceback for the user"
    assert err.value.__context__ is None or err.value.__suppress_context__
    return text


def test_the_demo_config_is_valid() -> None:
    s = load_settings(DEMO, env={})
    assert isinstance(s, Settings)
    assert s.kafka.source_topics == ["transactions"]
    assert s.batching.max_batch_size == 2000 and s.batching.max_wait_ms == 20
    assert s.kafka.consumer == {"fetch.wait.max.ms": 10}
    assert s.single_model.path == DEMO.parent / "fraud_model.onnx" and s.single_model.path.is_file()
    assert s.feature_width == 1 + 8 + 1 + 1 + 1 + 1 + 1 + 1
    assert [r.label for r in s.decisions.rules] == ["review", "reject"]


def test_settings_are_frozen() -> None:
    s = load_settings(DEMO, env={})
    with pytest.raises(ValidationError):
        s.batching.max_batch_size = 3


def test_relative_model_path_is_resolved_against_the_config_files_folder(
    write_config: WriteConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(lambda c: c["model"].update(path="../models/m.onnx"), name="conf/deep/c.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    s = load_settings(path, env={})
    assert s.single_model.path == (tmp_path / "conf" / "models" / "m.onnx").resolve()
    assert s.single_model.path.is_absolute()


def test_a_relative_model_path_from_the_environment_is_taken_from_the_working_directory(
    write_config: WriteConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(name="conf/c.yaml")
    monkeypatch.chdir(tmp_path)
    s = load_settings(path, env={"STREAMSCORE_MODEL__PATH": "models/m.onnx"})
    assert s.single_model.path == (tmp_path / "models" / "m.onnx").resolve(), "as a shell user typing it would expect"


def test_a_relative_config_path_works_from_the_current_folder(
    write_config: WriteConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(name="c.yaml")
    monkeypatch.chdir(tmp_path)
    assert load_settings("c.yaml", env={}).single_model.path == (tmp_path / "fraud_model.onnx").resolve()


def test_absolute_model_path_is_kept(write_config: WriteConfig, tmp_path: Path) -> None:
    model = tmp_path / "abs" / "m.onnx"
    assert load_settings(write_config(lambda c: c["model"].update(path=str(model))), env={}).single_model.path == model


def test_env_overrides_nested_keys_with_yaml_typed_values(write_config: WriteConfig) -> None:
    s = load_settings(write_config(), env={
        "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": "broker:9093",
        "STREAMSCORE_KAFKA__SOURCE_TOPICS": "[a, b]",
        "STREAMSCORE_BATCHING__MAX_BATCH_SIZE": "64",
        "STREAMSCORE_BATCHING__MAX_WAIT_MS": "2.5",
        "STREAMSCORE_METRICS__ENABLED": "false",
        "STREAMSCORE_MODEL__SCORE_COLUMN": "null",
        "STREAMSCORE_MODEL__VERSION": "v7",
        "STREAMSCORE_LOG_LEVEL": "DEBUG",
        "OTHER_BATCHING__MAX_BATCH_SIZE": "1",
        "streamscore_batching__max_batch_size": "2",
    })
    assert s.kafka.bootstrap_servers == "broker:9093"
    assert s.kafka.source_topics == ["a", "b"]
    assert s.batching.max_batch_size == 64
    assert s.batching.max_wait_ms == 2.5
    assert s.metrics.enabled is False
    assert s.single_model.score_column is None
    assert s.single_model.version == "v7"
    assert s.log_level == "DEBUG"
    assert s.kafka.group_id == "streamscore-demo", "keys not overridden keep their file value"


def test_env_overrides_in_passthrough_maps_turn_underscores_into_dots(write_config: WriteConfig) -> None:
    s = load_settings(write_config(), env={
        "STREAMSCORE_KAFKA__CLIENT__SASL_PASSWORD": "0123",
        "STREAMSCORE_KAFKA__CLIENT__SSL_KEY_PASSWORD": "yes",
        "STREAMSCORE_KAFKA__CLIENT__SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMSCORE_KAFKA__PRODUCER__LINGER_MS": "7",
        "STREAMSCORE_KAFKA__CONSUMER__FETCH_WAIT_MAX_MS": "50",
        "STREAMSCORE_KAFKA__CONSUMER__ENABLE_AUTO_COMMIT": "false",
    })
    assert s.kafka.client == {"sasl.password": "0123", "ssl.key.password": "yes", "security.protocol": "SASL_SSL"}, \
        "passthrough values stay text, as librdkafka reads them: secrets are not turned into numbers or booleans"
    assert s.kafka.producer == {"linger.ms": "7"}
    assert s.kafka.consumer == {"fetch.wait.max.ms": "50", "enable.auto.commit": "false"}, "merged into the file's map"


def test_underscores_outside_passthrough_maps_stay(write_config: WriteConfig) -> None:
    raw: dict[str, Any] = {}
    apply_env_overrides(raw, {"STREAMSCORE_BATCHING__MAX_IN_FLIGHT": "5", "STREAMSCORE_KAFKA__GROUP_ID": "g"})
    assert raw == {"batching": {"max_in_flight": 5}, "kafka": {"group_id": "g"}}


def test_environment_alone_can_build_the_raw_config() -> None:
    raw: dict[str, Any] = {}
    apply_env_overrides(raw, {
        "STREAMSCORE_MODEL__PATH": "/m.onnx",
        "STREAMSCORE_LOG_LEVEL": "DEBUG",
        "STREAMSCORE_KAFKA__CLIENT__SASL_MECHANISM": "PLAIN",
        "STREAMSCORE_": "ignored",
        "PATH": "/usr/bin",
    })
    assert raw == {"model": {"path": "/m.onnx"}, "log_level": "DEBUG", "kafka": {"client": {"sasl.mechanism": "PLAIN"}}}


def test_env_values_that_are_not_yaml_are_kept_as_text() -> None:
    raw: dict[str, Any] = {}
    apply_env_overrides(raw, {"STREAMSCORE_KAFKA__GROUP_ID": "[unclosed",
                              "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": "h:1,h:2"})
    assert raw == {"kafka": {"group_id": "[unclosed", "bootstrap_servers": "h:1,h:2"}}


def test_env_replaces_a_section_that_is_not_a_mapping() -> None:
    raw: dict[str, Any] = {"batching": 5}
    apply_env_overrides(raw, {"STREAMSCORE_BATCHING__MAX_WAIT_MS": "3"})
    assert raw == {"batching": {"max_wait_ms": 3}}


def test_env_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {
        "STREAMSCORE_KAFKA__SOURCE_TOPICS": "[in]",
        "STREAMSCORE_KAFKA__DESTINATION_TOPIC": "out",
        "STREAMSCORE_KAFKA__DEAD_LETTER_TOPIC": "dlq",
        "STREAMSCORE_MODEL__PATH": "m.onnx",
        "STREAMSCORE_FEATURES": "[{name: amount}]",
    }
    s = load_settings(None, env=env)
    assert s.single_model.path == tmp_path.resolve() / "m.onnx", "relative to the current folder without a file"
    assert s.features == [FeatureSettings(name="amount")]


def test_env_defaults_to_the_process_environment(write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSCORE_BATCHING__MAX_BATCH_SIZE", "17")
    assert load_settings(write_config()).batching.max_batch_size == 17


def test_the_projects_other_streamscore_variables_are_not_settings(write_config: WriteConfig) -> None:
    """STREAMSCORE_TANSU (embedded broker binary) and STREAMSCORE_TEST_BOOTSTRAP (tests) share the prefix."""
    s = load_settings(write_config(), env={"STREAMSCORE_TANSU": "/opt/tansu", "STREAMSCORE_TEST_BOOTSTRAP": "h:9092",
                                           "STREAMSCORE_TEST_FUZZ_EXAMPLES": "10"})
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"


def test_an_env_override_can_make_the_config_invalid(write_config: WriteConfig) -> None:
    message = config_error(write_config(), env={"STREAMSCORE_BATCHING__MAX_BATCH_SIZE": "0"})
    assert message == "batching.max_batch_size: Input should be greater than or equal to 1 (got 0)"
    message = config_error(write_config(), env={"STREAMSCORE_BATCHING__MAX_BATCH": "10"})
    assert message.startswith("batching.max_batch: unknown key")


def remove(section: str, key: str) -> Mutate:
    return lambda c: c[section].pop(key)


@pytest.mark.parametrize(("mutate", "expected"), [
    # unknown keys, with what the section accepts
    (lambda c: c["batching"].update(max_batch=1),
     ("batching.max_batch: unknown key (expected one of: max_batch_size, max_wait_ms, adaptive, max_in_flight, "
      "max_message_bytes, max_json_depth, commit_interval_ms, drain_timeout_s)")),
    (lambda c: c.update(batchin={}), "batchin: unknown key (expected one of: kafka, batching, model, features,"),
    (lambda c: c["features"][1].update(bogus=1), "features[1].bogus: unknown key (expected one of: name, path,"),
    (lambda c: c["decisions"]["rules"][0].update(score=1),
     "decisions.rules[0].score: unknown key (expected one of: label, min_score)"),
    (lambda c: c["model"].update(file="m.onnx"),
     "model.file: unknown key (expected one of: kind, path, name, version,"),
    # missing required keys
    (remove("kafka", "destination_topic"), "kafka.destination_topic: required key is missing"),
    (remove("model", "path"), "model.path: required key is missing"),
    (lambda c: c.pop("model"), "model: required key is missing"),
    (lambda c: c.pop("features"), "features: required key is missing"),
    (lambda c: c["features"][0].pop("name"), "features[0].name: required key is missing"),
    (lambda c: c["decisions"]["rules"][1].pop("min_score"), "decisions.rules[1].min_score: required key is missing"),
    # wrong types, with what was given
    (lambda c: c["batching"].update(max_wait_ms="soon"),
     "batching.max_wait_ms: Input should be a valid number, unable to parse string as a number (got 'soon')"),
    (lambda c: c["batching"].update(max_batch_size=2.5), "batching.max_batch_size: Input should be a valid integer"),
    (lambda c: c["batching"].update(max_json_depth=255),
     "batching.max_json_depth: Input should be less than or equal to 254 (got 255)"),
    (lambda c: c["kafka"].update(source_topics="transactions"),
     "kafka.source_topics: Input should be a valid list (got 'transactions')"),
    (lambda c: c["kafka"]["consumer"].update({"fetch.wait.max.ms": [10]}),
     "kafka.consumer.fetch.wait.max.ms: expected a string, number or boolean"),
    (lambda c: c["kafka"].update(client={"sasl.password": None}),
     "kafka.client.sasl.password: expected a string, number or boolean"),
    (lambda c: c.update(batching=5), "batching: Input should be a valid dictionary"),
    (lambda c: c["features"][0].update(dtype="double"),
     "features[0].dtype: Input should be 'float', 'int', 'bool' or 'category' (got 'double')"),
    (lambda c: c["model"].update(provider="gpu"),
     "model.provider: Input should be 'auto', 'cpu', 'cuda' or 'tensorrt' (got 'gpu')"),
    (lambda c: c.update(log_level="TRACE"), "log_level: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
    (lambda c: c["model"].update(name=["a"]), "model.name: Input should be a valid string"),
    # cross-field rules
    (lambda c: c["features"].append(dict(c["features"][0])), "features: duplicate feature names ['amount']"),
    (lambda c: c["features"].extend([dict(c["features"][4]), dict(c["features"][0])]),
     "features: duplicate feature names ['amount', 'hour']"),
    (lambda c: c["decisions"].update(rules=[{"label": "a", "min_score": 0.9}, {"label": "b", "min_score": 0.5}]),
     "decisions.rules: rule thresholds must be strictly ascending"),
    (lambda c: c["decisions"].update(rules=[{"label": "a", "min_score": 0.5}, {"label": "b", "min_score": 0.5}]),
     "decisions.rules: rule thresholds must be strictly ascending"),
    (lambda c: c["output"].update(copy_fields=["score"]),
     "output.copy_fields: ['score'] are names the output record already uses"),
    (lambda c: c["output"].update(copy_fields=["id", "source", "model_version", "decision"]),
     "output.copy_fields: ['decision', 'model_version', 'source'] are names the output record already uses"),
    (lambda c: c["kafka"].update(dead_letter_topic=c["kafka"]["destination_topic"]),
     "kafka: source, destination and dead-letter topics must all differ"),
    (lambda c: c["kafka"].update(destination_topic="transactions"),
     "kafka: source, destination and dead-letter topics must all differ"),
    (lambda c: c["features"][0].update(dtype="category"), "features[0]: a category feature needs a non-empty"),
    (lambda c: c["features"][0].update(categories=["a"]), "features[0]: 'categories' is only for dtype 'category'"),
    (lambda c: c["features"][0].update(required=False), "features[0]: an optional feature needs a 'default'"),
    (lambda c: c["features"][2].update(categories=["US", "US"]), "features[2]: 'categories' has duplicates"),
    (lambda c: c.update(features=[]), "features: List should have at least 1 item"),
])
def test_errors_are_one_line_and_name_the_key(write_config: WriteConfig, mutate: Mutate, expected: str) -> None:
    message = config_error(write_config(mutate))
    assert message.startswith(expected), message


def test_invalid_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("kafka:\n  group_id: g\n  source_topics: [unclosed\nbatching: {}\n")
    message = config_error(path)
    assert message.startswith(f"config file {path}: not valid YAML at line ")
    path.write_text("a: b: c\n")
    assert config_error(path) == f"config file {path}: not valid YAML at line 1"


def test_a_top_level_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- kafka\n- model\n")
    assert config_error(path) == f"config file {path}: expected a mapping of sections at the top level"


def test_an_empty_file_is_an_empty_config(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert config_error(path) == "kafka: required key is missing"


@pytest.mark.parametrize(("make", "why"), [
    (lambda d: d / "missing.yaml", "No such file or directory"),
    (lambda d: d, "Is a directory"),
    (lambda d: (d / "binary.yaml", (d / "binary.yaml").write_bytes(b"\xff\xfe\x00kafka"))[0], "not UTF-8 text"),
])
def test_unreadable_files(tmp_path: Path, make: Callable[[Path], Path], why: str) -> None:
    path = make(tmp_path)
    assert config_error(path) == f"config file {path}: cannot be read ({why})"


def test_describe_validation_error_on_a_section() -> None:
    with pytest.raises(ValidationError) as err:
        KafkaSettings.model_validate({"source_topics": ["a"], "destination_topic": "b", "dead_letter_topic": "c",
                                      "session_timeout_ms": 10})
    assert describe_validation_error(err.value) == (
        "session_timeout_ms: Input should be greater than or equal to 1000 (got 10)")


def test_config_errors_belong_to_the_error_tree() -> None:
    assert issubclass(ConfigError, StreamScoreError) and issubclass(ModelError, ConfigError)


def test_passthrough_values_can_come_from_files(write_config: WriteConfig, tmp_path: Path) -> None:
    """``${file:/path}`` reads a mounted secret; one trailing newline (as editors and kubectl leave) is dropped."""
    (tmp_path / "sasl").write_text("s3cret 0123\n")
    (tmp_path / "key").write_text("k\n\n")
    env = {"STREAMSCORE_KAFKA__CLIENT__SSL_KEY_PASSWORD": f"${{file:{tmp_path / 'key'}}}"}
    client = {"sasl.password": f"${{file:{tmp_path / 'sasl'}}}", "sasl.username": "${file:not closed"}
    s = load_settings(write_config(lambda c: c["kafka"].update(client=client)), env=env)
    assert s.kafka.client == {"sasl.password": "s3cret 0123", "sasl.username": "${file:not closed",
                              "ssl.key.password": "k\n"}


def test_an_unreadable_secret_file_is_one_line_naming_the_key(write_config: WriteConfig, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    producer = {"sasl.password": f"${{file:{missing}}}"}
    message = config_error(write_config(lambda c: c["kafka"].update(producer=producer)))
    assert message == f"kafka.producer: sasl.password: cannot read {missing} (No such file or directory)"
