"""``streamscore models list|show|validate`` on a registry folder, and ``validate`` of a config
whose model is a registry reference (in-process through ``cli.main``: the command line's own
parsing and exit codes, without an interpreter start per call)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from streamscore.cli import main
from streamscore.registry import ModelMetadata, Registry
from tests.cli.test_validate import DEMO, linear_model

Capture = pytest.CaptureFixture[str]


def cli(capsys: Capture, *args: str) -> subprocess.CompletedProcess[str]:
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out.out, out.err)


def make_registry(tmp_path: Path) -> Registry:
    reg = Registry(tmp_path / "registry")
    names = [f["name"] for f in DEMO["features"]]
    for version in ("1", "2"):
        reg.publish("fraud", version, linear_model(tmp_path / f"m{version}.onnx", 15),
                    ModelMetadata(features=names, width=15, score_output="probabilities", score_column=1,
                                  metrics={"auc": 0.5}, tags={"owner": "risk"}))
    reg.set_alias("fraud", "production", "2")
    return reg


def test_list_show_and_validate(tmp_path: Path, capsys: Capture) -> None:
    reg = make_registry(tmp_path)
    listed = cli(capsys, "models", "--registry", str(reg.root), "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "fraud: 1, 2 (production)"
    shown = cli(capsys, "models", "--registry", str(reg.root), "show", "fraud")
    assert shown.returncode == 0
    assert shown.stdout.startswith("fraud@2 (alias production)\n") and "owner: risk" in shown.stdout
    ok = cli(capsys, "models", "--registry", str(reg.root), "validate")
    assert (ok.returncode, ok.stdout.strip()) == (0, "2 versions of 1 models checked, 0 problems")
    (reg.root / "fraud/1/model.onnx").write_bytes(b"x")
    bad = cli(capsys, "models", "--registry", str(reg.root), "validate")
    assert bad.returncode == 1 and bad.stdout.startswith("problem: fraud@1:")
    missing = cli(capsys, "models", "--registry", str(reg.root), "show", "fraud@9")
    assert missing.returncode == 2 and missing.stderr.startswith("streamscore: error: registry: model 'fraud' has no")


def test_validate_takes_the_model_from_the_registry(tmp_path: Path, capsys: Capture) -> None:
    make_registry(tmp_path)
    config = yaml.safe_load(yaml.safe_dump(DEMO))
    config["model"] = {"path": "registry:fraud@production", "provider": "cpu"}
    config["registry"] = {"root": "registry"}  # relative to the config file
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = cli(capsys, "validate", "-c", str(path), "--skip-broker")
    assert result.returncode == 0, result.stderr
    assert "model ok: fraud 2 on CPUExecutionProvider" in result.stdout
    listed = cli(capsys, "models", "-c", str(path), "list")
    assert listed.stdout.strip() == "fraud: 1, 2 (production)"
