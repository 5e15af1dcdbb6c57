"""Every example configuration (one per inference pattern) passes ``validate`` and runs to its
summary with ``streamscore demo --config``, on the test session's broker with few events (the
demo runs go side by side, as processes of their own, to keep the suite short)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamscore.cli import main

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
GRAPHS = {"cascade", "chain", "ensemble", "segments"}


def test_there_is_one_example_per_pattern() -> None:
    assert [p.stem for p in EXAMPLES] == ["cascade", "chain", "ensemble", "registry", "segments", "shadow-canary"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_each_example_validates(example: Path) -> None:
    assert main(["validate", "-c", str(example), "--skip-broker"]) == 0


def test_each_example_runs_to_its_summary_with_demo_config(bootstrap: str) -> None:
    runs = {p.stem: subprocess.Popen(
        [sys.executable, "-m", "streamscore", "demo", "--config", str(p), "--bootstrap-servers", bootstrap,
         "--events", "300", "--rate", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for p in EXAMPLES}
    for name, proc in runs.items():
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, f"{name}:\n{out}"
        assert "consumed              300  = scored + dead-lettered: yes" in out, f"{name}:\n{out}"
        assert ("model rows" in out) == (name in GRAPHS), f"{name}:\n{out}"
        if name == "shadow-canary":
            assert "shadow " in out and "canary " in out, out
