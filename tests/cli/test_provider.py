"""``validate`` refuses what ``run`` would: a tree model on CUDA under ``model.strict_provider``
(CUDA simulated on the CPU onnxruntime; in-process through ``cli.main`` so the simulation applies)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.cli.test_models import Capture, cli
from tests.cli.test_validate import DEMO
from tests.unit.test_onnx_runner import simulate_cuda, tree_model


def config(tmp_path: Path, **model: object) -> str:
    raw = yaml.safe_load(yaml.safe_dump(DEMO))
    raw["model"].update(path=str(tree_model(tmp_path / "tree.onnx", width=15)), provider="cuda",
                        **model)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_validate_refuses_a_tree_model_on_cuda_when_strict(
    tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulate_cuda(monkeypatch)
    result = cli(capsys, "validate", "-c", config(tmp_path, strict_provider=True), "--skip-broker")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "model.strict_provider: " in errors[0], result.stderr
    assert "TreeEnsembleClassifier" in errors[0]


def test_validate_passes_it_with_a_warning_when_not_strict(
    tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    simulate_cuda(monkeypatch)
    caplog.set_level("WARNING", logger="streamscore.runners.onnx")
    result = cli(capsys, "validate", "-c", config(tmp_path), "--skip-broker")
    assert result.returncode == 0, result.stderr
    assert [r.getMessage() for r in caplog.records if "strict_provider" in r.getMessage()]
