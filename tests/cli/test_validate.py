"""``streamscore validate``: every failure is one line naming the key, with a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from streamscore.broker import free_port

REPO = Path(__file__).resolve().parents[2]
DEMO = yaml.safe_load((REPO / "streamscore" / "demo" / "config.yaml").read_text())


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamscore", *args], capture_output=True, text=True, timeout=60,
                          check=False)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def linear_model(path: Path, width: int, elem: int = TensorProto.FLOAT) -> Path:
    """A [None, width] -> [None, 2] model with the given input element type."""
    w = np.full((width, 2), 0.01, dtype=np.float32)
    nodes = [helper.make_node("Cast", ["features"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["x", "w"], ["probabilities"])]
    graph = helper.make_graph(
        nodes, "linear", [helper.make_tensor_value_info("features", elem, [None, width])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, [width, 2], w.ravel().tolist())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def write(tmp_path: Path, model: Path, **changes: Any) -> Path:
    config = yaml.safe_load(yaml.safe_dump(DEMO))
    config["model"]["path"] = str(model)
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def good_model(tmp_path: Path) -> Path:
    return linear_model(tmp_path / "good.onnx", 15)


def test_valid_config_and_model_pass_without_broker(tmp_path: Path, good_model: Path) -> None:
    result = run_cli("validate", "-c", str(write(tmp_path, good_model)), "--skip-broker")
    assert result.returncode == 0, result.stderr
    assert "model ok" in result.stdout


def test_unknown_key(tmp_path: Path, good_model: Path) -> None:
    result = run_cli("validate", "-c", str(write(tmp_path, good_model, batching__max_batch=5)), "--skip-broker")
    assert result.returncode == 2
    assert "batching.max_batch: unknown key" in one_error_line(result)


def test_wrong_type_names_key_and_expectation(tmp_path: Path, good_model: Path) -> None:
    result = run_cli("validate", "-c", str(write(tmp_path, good_model, batching__max_wait_ms="soon")), "--skip-broker")
    assert result.returncode == 2
    line = one_error_line(result)
    assert "batching.max_wait_ms" in line and "number" in line


def test_missing_model_file(tmp_path: Path) -> None:
    result = run_cli("validate", "-c", str(write(tmp_path, tmp_path / "nope.onnx")), "--skip-broker")
    assert result.returncode == 2
    assert "model.path: file not found" in one_error_line(result)


def test_feature_count_mismatch(tmp_path: Path) -> None:
    model = linear_model(tmp_path / "narrow.onnx", 12)
    result = run_cli("validate", "-c", str(write(tmp_path, model)), "--skip-broker")
    assert result.returncode == 2
    line = one_error_line(result)
    assert "features:" in line and "15" in line and "12" in line


def test_feature_dtype_mismatch(tmp_path: Path) -> None:
    model = linear_model(tmp_path / "double.onnx", 15, TensorProto.DOUBLE)
    result = run_cli("validate", "-c", str(write(tmp_path, model)), "--skip-broker")
    assert result.returncode == 2
    line = one_error_line(result)
    assert "model.input" in line and "tensor(double)" in line and "tensor(float)" in line


def test_unreachable_broker(tmp_path: Path, good_model: Path) -> None:
    port = free_port()  # nothing listens there
    config = write(tmp_path, good_model, kafka__bootstrap_servers=f"127.0.0.1:{port}")
    result = run_cli("validate", "-c", str(config), "--timeout", "2")
    assert result.returncode == 1
    line = one_error_line(result)
    assert "kafka.bootstrap_servers" in line and f"127.0.0.1:{port}" in line
    assert "Connection refused" in line, "librdkafka's reason is named"


def test_environment_overrides_reach_validation(tmp_path: Path, good_model: Path) -> None:
    config = write(tmp_path, good_model)
    result = subprocess.run(
        [sys.executable, "-m", "streamscore", "validate", "-c", str(config), "--skip-broker"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**__import__("os").environ, "STREAMSCORE_BATCHING__MAX_BATCH_SIZE": "0"},
    )
    assert result.returncode == 2
    assert "batching.max_batch_size" in one_error_line(result)


def test_version_and_module_entry_point() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("streamscore ")


def test_secrets_from_the_environment_never_reach_the_output(tmp_path: Path, good_model: Path) -> None:
    import os

    secret = "hunter2-do-not-print"
    config = write(tmp_path, good_model, kafka__bootstrap_servers=f"127.0.0.1:{free_port()}")
    env = {**os.environ, "STREAMSCORE_KAFKA__CLIENT__SASL_PASSWORD": secret,
           "STREAMSCORE_KAFKA__CLIENT__SSL_KEY_PASSWORD": secret, "STREAMSCORE_LOG_LEVEL": "DEBUG"}
    for extra in (["--skip-broker"], ["--timeout", "1"]):
        result = subprocess.run([sys.executable, "-m", "streamscore", "validate", "-c", str(config), *extra],
                                capture_output=True, text=True, timeout=60, env=env, check=False)
        assert secret not in result.stdout + result.stderr
        assert "model ok" in result.stdout, result.stderr


@pytest.mark.parametrize(("section", "key", "value", "expected"), [
    ("producer", "acks", "1", "kafka.producer: acks must be 'all' (or -1)"),
    ("client", "enable.idempotence", "false", "kafka.client: enable.idempotence must be 'true'"),
    ("consumer", "enable.auto.commit", "true", "kafka.consumer: enable.auto.commit must be 'false'"),
    ("producer", "transactional.id", "mine", "kafka.producer: transactional.id is not a passthrough setting"),
    ("client", "transactional.id", "mine", "kafka.client: transactional.id is not a passthrough setting"),
])
def test_validate_refuses_what_run_would_refuse(tmp_path: Path, good_model: Path, section: str, key: str,
                                                value: str, expected: str) -> None:
    """A passthrough value against the delivery guarantee: one line naming the key, from both commands."""
    config = write(tmp_path, good_model, **{f"kafka__{section}": {key: value}})
    for command in (["validate", "-c", str(config), "--skip-broker"], ["run", "-c", str(config)]):
        result = run_cli(*command)
        assert result.returncode == 2, result.stderr
        assert expected in one_error_line(result)


def test_a_passthrough_value_that_repeats_the_guarantee_is_accepted(tmp_path: Path, good_model: Path) -> None:
    config = write(tmp_path, good_model, kafka__producer={"acks": "-1", "enable.idempotence": "true"})
    result = run_cli("validate", "-c", str(config), "--skip-broker")
    assert result.returncode == 0, result.stderr


def test_an_unknown_model_kind_is_refused(tmp_path: Path, good_model: Path) -> None:
    result = run_cli("validate", "-c", str(write(tmp_path, good_model, model__kind="tensorflow")), "--skip-broker")
    assert result.returncode == 2
    assert "model.kind: unknown kind 'tensorflow' (expected one of: onnx)" in one_error_line(result)


def write_graph(tmp_path: Path, models: dict[str, Path], graph: dict[str, Any]) -> Path:
    config = yaml.safe_load(yaml.safe_dump(DEMO))
    del config["model"]
    config["models"] = {name: {"path": str(path), "provider": "cpu"} for name, path in models.items()}
    config["graph"] = graph
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_valid_graph_passes(tmp_path: Path, good_model: Path) -> None:
    other = linear_model(tmp_path / "other.onnx", 15)
    config = write_graph(tmp_path, {"a": good_model, "b": other},
                         {"type": "cascade", "stages": ["a", "b"], "band": [0.4, 0.6]})
    result = run_cli("validate", "-c", str(config), "--skip-broker")
    assert result.returncode == 0, result.stderr
    assert "model ok: cascade:a+b" in result.stdout


@pytest.mark.parametrize(("graph", "error"), [
    ({"type": "ensemble", "members": ["a", "c"]}, "graph.members[1]: unknown model 'c' (models has: a, b)"),
    ({"type": "chain", "stages": ["a", "b", "a"]}, "graph.stages[2]: model 'a' appears twice in the graph (a cycle)"),
    ({"type": "ensemble", "members": ["a", "b"]}, ("models.b.features: the spec gives 15 columns but model input "
                                                   "'features' expects 9")),
])
def test_graph_mistakes_are_one_line_naming_the_key(tmp_path: Path, good_model: Path, graph: dict[str, Any],
                                                    error: str) -> None:
    """(Not 'errors' in the name: the tmp path would hold it and count as an error line.)"""
    narrow = linear_model(tmp_path / "narrow.onnx", 9)
    result = run_cli("validate", "-c", str(write_graph(tmp_path, {"a": good_model, "b": narrow}, graph)),
                     "--skip-broker")
    assert result.returncode != 0
    assert error in one_error_line(result)


STATEFUL = [{"name": "tx_count_1h", "aggregate": "count", "key": "card.id", "window": "1h"}]


def test_stateful_features_validate_with_the_faust_engine_only(tmp_path: Path, good_model: Path) -> None:
    features = [*DEMO["features"][:-2], *STATEFUL, DEMO["features"][-1]]
    ok = run_cli("validate", "-c", str(write(tmp_path, good_model, features=features, engine="faust")),
                 "--skip-broker")
    assert ok.returncode == 0, ok.stderr
    refused = run_cli("validate", "-c", str(write(tmp_path, good_model, features=features)), "--skip-broker")
    assert refused.returncode == 2
    assert "features[6].aggregate: stateful features need 'engine: faust'" in one_error_line(refused)
    bad_window = [*features[:6], {**STATEFUL[0], "window": "an hour"}, features[7]]
    refused = run_cli("validate", "-c", str(write(tmp_path, good_model, features=bad_window, engine="faust")),
                      "--skip-broker")
    assert refused.returncode == 2 and "expected a number and a unit" in one_error_line(refused)


def test_the_faust_engine_takes_exactly_once_and_refuses_a_transactional_id_on_one_line(
    tmp_path: Path, good_model: Path,
) -> None:
    ok = run_cli("validate", "-c", str(write(tmp_path, good_model, engine="faust", delivery="exactly_once")),
                 "--skip-broker")
    assert ok.returncode == 0, ok.stderr
    result = run_cli("validate", "-c", str(write(tmp_path, good_model, engine="faust", delivery="exactly_once",
                                                 kafka__transactional_id="tx-1")), "--skip-broker")
    assert result.returncode == 2
    assert one_error_line(result).startswith("streamscore: error: kafka.transactional_id: engine faust names its "
                                             "transactional ids itself")


def test_validate_and_batch_refuse_exactly_once_from_files_into_the_destinations(tmp_path: Path,
                                                                                  good_model: Path) -> None:
    """Their progress is a file, which cannot join a Kafka transaction: refused before anything is read."""
    (tmp_path / "in.jsonl").write_text('{"amount": 1}\n')
    config = write(tmp_path, good_model, delivery="exactly_once",
                   batch={"input": {"files": [str(tmp_path / "in.jsonl")]}, "state": str(tmp_path / "state")})
    for command in (["validate", "-c", str(config), "--skip-broker"], ["batch", "-c", str(config)]):
        result = run_cli(*command)
        assert result.returncode == 2, result.stderr
        assert "delivery: exactly_once: 'streamscore batch' writes file inputs" in one_error_line(result)
    assert not (tmp_path / "state").exists(), "refused before the plan is made"
