"""``streamscore optimize``: on the demo model it writes the three variants with their accuracy and
speed report, and the int8 model passes ``validate``; a variant that changes decisions past
``--min-agreement`` is refused with one line and not written. AUC against scikit-learn's."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import orjson
import pytest
import yaml
from onnx import TensorProto, helper
from sklearn.metrics import roc_auc_score

from streamscore.commands.optimize import auc
from streamscore.demo.transactions import TransactionGenerator
from tests.cli.test_validate import REPO

DEMO = REPO / "streamscore" / "demo"


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    events, labels = TransactionGenerator(seed=8).labelled(600)
    path = tmp_path / "sample.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps({**e, "is_fraud": int(y)}) for e, y in zip(events, labels, strict=True)))
    return path


def test_the_demo_model_gets_three_variants_with_reports(tmp_path: Path, sample: Path,
                                                        cli: Callable[..., int],
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert cli("--log-level", "WARNING", "optimize", str(DEMO / "fraud_model.onnx"), "-c", str(DEMO / "config.yaml"),
                 "--data", str(sample), "--label", "is_fraud", "--seconds", "0.01", "--out-dir", str(out)) == 0
    report = json.loads((out / "fraud_model.optimize.json").read_text())
    assert report["rows"] == 600 and report["labels"]
    by_name = {r["variant"]: r for r in report["models"]}
    assert list(by_name) == ["original", "optimized", "int8", "fp16"]
    for name in ("optimized", "int8", "fp16"):
        assert (out / f"fraud_model.{name}.onnx").is_file()
        assert by_name[name]["decision_agreement"] >= 0.999
        assert set(by_name[name]["rows_per_s"]) == {"1", "64", "1024"}
    assert by_name["original"]["auc"] > 0.7
    assert "| int8 |" in capsys.readouterr().out

    config = yaml.safe_load((DEMO / "config.yaml").read_text())
    config["model"]["path"] = str(out / "fraud_model.int8.onnx")
    (tmp_path / "int8.yaml").write_text(yaml.safe_dump(config))
    assert cli("--log-level", "WARNING", "validate", "-c", str(tmp_path / "int8.yaml"), "--skip-broker") == 0
    assert "model ok: fraud-demo" in capsys.readouterr().out


def _mlp(path: Path, width: int) -> None:
    """sigmoid(x W1) W2 -> sigmoid: float32 MatMuls that dynamic int8 quantization perturbs."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.5, (width, 32)).astype(np.float32)
    w2 = rng.normal(0, 1.0, (32, 2)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["features", "w1"], ["h"]), helper.make_node("Sigmoid", ["h"], ["a"]),
             helper.make_node("MatMul", ["a", "w2"], ["z"]), helper.make_node("Sigmoid", ["z"], ["probabilities"])]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
        initializer=[helper.make_tensor("w1", TensorProto.FLOAT, w1.shape, w1.ravel().tolist()),
                     helper.make_tensor("w2", TensorProto.FLOAT, w2.shape, w2.ravel().tolist())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_a_variant_below_the_agreement_is_refused(tmp_path: Path, sample: Path,
                                                 cli: Callable[..., int],
        capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "mlp.onnx"
    _mlp(model, 15)
    shutil.copy(DEMO / "config.yaml", tmp_path / "config.yaml")
    assert cli("--log-level", "ERROR", "optimize", str(model), "-c", str(tmp_path / "config.yaml"), "--data",
                 str(sample), "--variants", "int8", "--min-agreement", "1.0", "--seconds", "0.01") == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("streamscore: error: --min-agreement: int8 ("), errors
    assert not (tmp_path / "mlp.int8.onnx").exists()
    report = json.loads((tmp_path / "mlp.optimize.json").read_text())
    assert report["models"][1]["refused"] and report["models"][1]["decision_agreement"] < 1.0


def test_auc_matches_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 500)
    scores = np.round(rng.random(500) + labels * 0.3, 1)  # rounded: many ties
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert auc(np.ones(3, np.int64), np.arange(3.0)) is None
