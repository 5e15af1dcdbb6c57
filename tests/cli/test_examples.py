"""Every example configuration (one per inference pattern) passes ``validate`` and runs to its
summary with ``streamscore demo --config``, here on the test session's broker with few events."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamscore.cli import main
from streamscore.demo.run import DemoOptions, run_demo

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_is_one_example_per_pattern() -> None:
    assert [p.stem for p in EXAMPLES] == ["cascade", "chain", "ensemble", "registry", "segments", "shadow-canary"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_each_example_validates_and_runs_to_its_summary(example: Path, bootstrap: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-c", str(example), "--skip-broker"]) == 0
    assert run_demo(DemoOptions(config=example, bootstrap_servers=bootstrap, events=300, rate=0)) == 0
    out = capsys.readouterr().out
    assert "consumed              300  = scored + dead-lettered: yes" in out, out
    if example.stem in ("cascade", "chain", "ensemble", "segments"):
        assert "model rows" in out
    if example.stem == "shadow-canary":
        assert "shadow         " in out and "canary         " in out
