"""Drift and data quality gauges of a live service on a real broker: an unshifted stream stays below
the PSI threshold; shifted amounts pass it (the alert's condition holds on the scraped samples); a
dropped optional field and a renamed category move the default and unknown rates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamscore.demo.transactions import TransactionGenerator
from tests.support import ServiceProcess, Topics, labelled, produce, samples, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.broker_agnostic]

PHASE = 1000
MONITORING = {"window_events": PHASE, "slots": 4, "min_events": 250, "psi_threshold": 0.2}


def _items(events: list[dict[str, Any]]) -> list[tuple[bytes, bytes, None]]:
    return [(str(e["transaction_id"]).encode(), orjson.dumps(e), None) for e in events]


def _shift_amounts(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "amount": round(event["amount"] * 20 + 500, 2)}


def _drop_and_rename(event: dict[str, Any]) -> dict[str, Any]:
    merchant = {**event["merchant"], "category": "groceries"}  # an upstream rename
    return {**{k: v for k, v in event.items() if k != "activity"}, "merchant": merchant}


def test_drift_gauges_follow_a_shifted_stream(
    bootstrap: str, topics: Callable[..., Topics], write_config: Callable[..., Path],
    service: Callable[..., ServiceProcess],
) -> None:
    t = topics()
    proc = service(write_config(t, monitoring=MONITORING))
    proc.wait_ready()
    generator = TransactionGenerator(seed=11)
    sent = 0

    def phase(change: Callable[[dict[str, Any]], dict[str, Any]] | None) -> dict[str, float]:
        nonlocal sent
        events = generator.events(PHASE)
        produce(bootstrap, t.source, _items([change(e) if change else e for e in events]))
        sent += PHASE
        wait_for(lambda: samples(proc.metrics())["streamscore_events_scored_total"] >= sent, 60,
                 f"{sent} events scored", 0.3)
        return samples(proc.metrics())

    steady = phase(None)
    threshold = steady['streamscore_drift_threshold{check="psi"}']
    assert threshold == 0.2
    psi = labelled(steady, "streamscore_feature_psi")
    assert set(psi) == {"amount", "merchant_category", "merchant_country", "card_present", "hour", "card_age_days",
                        "tx_count_1h", "tx_count_24h"}
    assert max(psi.values()) < threshold, psi
    assert steady["streamscore_score_psi"] < threshold

    shifted = phase(_shift_amounts)
    psi = labelled(shifted, "streamscore_feature_psi")
    assert psi["amount"] > threshold  # the StreamscoreFeatureDrift condition, evaluated on the samples
    assert [f for f, v in psi.items() if v > threshold] == ["amount"]

    quality = phase(_drop_and_rename)
    default = labelled(quality, "streamscore_feature_default_rate")
    reference = labelled(quality, "streamscore_feature_default_rate_reference")
    assert default["tx_count_24h"] - reference["tx_count_24h"] > quality[
        'streamscore_drift_threshold{check="default_rate"}']
    assert labelled(steady, "streamscore_feature_default_rate")["tx_count_24h"] < reference["tx_count_24h"] + 0.05
    unknown = labelled(quality, "streamscore_feature_unknown_rate")
    assert labelled(steady, "streamscore_feature_unknown_rate")["merchant_category"] == 0.0
    # every grocery transaction (about a quarter of them) now arrives under an unknown name
    assert unknown["merchant_category"] > quality['streamscore_drift_threshold{check="unknown_rate"}']
