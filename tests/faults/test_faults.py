"""Fault injection (issue 4) at CI sizes: the real service, real broker, real faults.

Each test runs one scenario of ``load.faults.scenarios`` and fails on any broken invariant: an
input lost, duplicates past the at-least-once bound, or a scenario check (exit codes, no commit
past an unwritten event, stayed in the group ...). ``python -m load.faults`` runs the full sizes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from load.faults.scenarios import SCENARIOS, Env

pytestmark = [pytest.mark.faults, pytest.mark.integration]

OWN_BROKER = {"broker-freeze", "unwritable-destination"}
"""Scenarios that need a broker they control, whatever STREAMSCORE_TEST_BOOTSTRAP says."""


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_loses_nothing_and_keeps_its_invariants(name: str, tmp_path: Path) -> None:
    scenario = SCENARIOS[name]
    env = Env(tmp_path, os.environ.get("STREAMSCORE_TEST_BOOTSTRAP"), seed=sorted(SCENARIOS).index(name))
    try:
        result = scenario.run(env, scenario.ci)
    finally:
        env.close()

    assert result.checks, "a scenario states what it checked"
    logs = "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-30:])
                     for p in env.logs if p.exists())
    assert not result.failures(), f"{name}: {result.failures()}\nchecks {result.checks}\nnotes {result.notes}\n{logs}"
    assert result.lost == 0
    assert result.duplicated <= result.duplicate_bound
