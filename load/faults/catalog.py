"""Every fault scenario, by name: those of issue 4 (both brokers) and the broker-crash ones of
issue 10 (Apache Kafka only, ``Scenario.brokers``), and those of the inference patterns (issue 12)."""

from __future__ import annotations

from load.faults import broker_faults, pattern_faults, scenarios
from load.faults.scenarios import Scenario

SCENARIOS: dict[str, Scenario] = {**scenarios.SCENARIOS, **broker_faults.SCENARIOS, **pattern_faults.SCENARIOS}
