"""Fault injection (issue 4) at CI sizes: the real service, real broker, real faults.

Each test runs one scenario of ``load.faults.scenarios`` and fails on any broken invariant: an
input lost, duplicates past the at-least-once bound, or a scenario check (exit codes, no commit
past an unwritten event, stayed in the group ...). ``python -m load.faults`` runs the full sizes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from load.brokers import broker_kind
from load.faults.catalog import SCENARIOS
from load.faults.harness import InputStream, make_topics, write_config
from load.faults.scenarios import Env, Result, _finish

pytestmark = [pytest.mark.faults, pytest.mark.integration]

OWN_BROKER = {"broker-freeze", "unwritable-destination", "broker-kill9", "destination-deleted", "oversize-output",
              "oversize-output-faust", "oversize-output-exactly-once", "oversize-output-exactly-once-faust"}
"""Scenarios that need a broker they control, whatever STREAMSCORE_TEST_BOOTSTRAP says."""
CI_ON_ONE_BROKER = {
    "kill9-exactly-once": ("kafka", ("the embedded broker honours neither read_committed nor fencing: "
                                     "exactly-once is shown on Apache Kafka")),
    "slow-model": ("tansu", "a slow model is the service's own fault, the same on every broker"),
    "kill9": ("kafka", ("on the embedded broker kill9-cascade and the integration suite's kill -9 test kill the "
                        "service mid-stream")),
    "rebalance-storm": ("kafka", ("rebalances are run by the broker's group coordinator: Apache Kafka's is the one "
                                  "that matters")),
    "broker-freeze": ("kafka", "a frozen broker's sessions and fencing are Apache Kafka's (the embedded one has none)"),
}
"""CI time: scenarios that can run on both brokers but show something on one only (``python -m
load.faults`` still runs them on either)."""
NOT_IN_CI = {
    "oversize-output-exactly-once-faust": (
        "the engine's exactly-once stop is the one line tests/unit/test_faust_oversize.py checks; the end-to-end "
        "run is python -m load.faults --broker kafka --scenario oversize-output-exactly-once-faust"),
}
"""CI time: scenarios run only by ``python -m load.faults``, with why."""


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_loses_nothing_and_keeps_its_invariants(name: str, tmp_path: Path) -> None:
    scenario = SCENARIOS[name]
    if broker_kind() not in scenario.brokers:
        if scenario.brokers == ("kafka",):
            pytest.skip(f"{name} runs on Apache Kafka only (STREAMSCORE_TEST_BROKER=kafka): the embedded broker keeps "
                        "its logs in memory, acknowledges writes to a deleted topic and ignores max.message.bytes")
        pytest.skip(f"{name} runs on {', '.join(scenario.brokers)} only: {scenario.why_brokers}")
    if name in NOT_IN_CI:
        pytest.skip(f"{name} is not run in the test suite: {NOT_IN_CI[name]}")
    if name in CI_ON_ONE_BROKER and broker_kind() != CI_ON_ONE_BROKER[name][0]:
        pytest.skip(f"{name} runs on {CI_ON_ONE_BROKER[name][0]} only in the test suite: {CI_ON_ONE_BROKER[name][1]}")
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


@pytest.mark.broker_agnostic  # a check of the harness itself
def test_a_final_instance_that_already_crashed_fails_the_exit_check(tmp_path: Path) -> None:
    """``_finish`` checks the exit code of every final instance, also of one that exited before it
    sent SIGTERM (here an entry point that exits 3 at once, standing in for a crash)."""
    env = Env(tmp_path, os.environ.get("STREAMSCORE_TEST_BOOTSTRAP"))
    try:
        with env.broker() as (bootstrap, _):
            t = make_topics(bootstrap, partitions=1)
            stream = InputStream(bootstrap, t.source, 20)
            stream.run()
            crashed = env.service(write_config(tmp_path, bootstrap, t), ("-c", "raise SystemExit(3)")).start()
            crashed.wait(30)
            result = _finish(env, bootstrap, t, stream, [crashed], Result("crash", 20, "none", 0, 0, 0))
    finally:
        env.close()
    assert result.checks["final SIGTERM exits 0"] is False
    assert result.notes["final exit codes"] == [3]
    assert result.lost == 20
