"""The status page at / of a live service, loaded in headless chromium while demo transactions are
scored: it shows the model, non-zero throughput and latency, the decision mix, dead-letter reasons
and drift per feature, and keeps refreshing them."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamscore.demo.transactions import TransactionGenerator
from tests.support import ServiceProcess, Topics, produce, samples, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.broker_agnostic]

SCREENSHOT = os.environ.get("STATUS_PAGE_SCREENSHOT")
"""Where to save a screenshot of the page (docs/status-page.png is made this way; not STREAMSCORE_*,
which the service would read as a setting)."""


NO_VALUE = "\N{EN DASH}"
"""What the page shows for a figure it has no value for yet."""


def _number(text: str) -> float:
    return float(text.replace(",", "").split()[0]) if text.strip() not in ("", NO_VALUE) else 0.0


def test_the_status_page_shows_live_figures(
    bootstrap: str, topics: Callable[..., Topics], write_config: Callable[..., Path],
    service: Callable[..., ServiceProcess], browser_page: Any,
) -> None:
    t = topics()
    proc = service(write_config(t, monitoring={"window_events": 2000, "min_events": 500}))
    proc.wait_ready()
    page = browser_page
    page.goto(f"http://127.0.0.1:{proc.port}/?interval=300")
    page.wait_for_function("document.getElementById('models').textContent.includes('fraud-demo')", timeout=20_000)

    generator = TransactionGenerator(seed=31, malformed_rate=0.02)
    first = [(k, v, None) for k, v in generator.encoded(1500)]
    produce(bootstrap, t.source, first)
    wait_for(lambda: samples(proc.metrics())["streamscore_events_consumed_total"] >= len(first), 60,
             "the first events consumed", 0.3)
    page.wait_for_function("Number(document.getElementById('scored').textContent.replace(/,/g, '')) > 1000",
                           timeout=20_000)
    # a second wave while the page polls: the rate it computes between two polls is non-zero
    produce(bootstrap, t.source, [(k, v, None) for k, v in generator.encoded(1500)])
    page.wait_for_function("Number(document.getElementById('rate-in').textContent.replace(/,/g, '')) > 0",
                           timeout=20_000)
    page.wait_for_function("Number(document.getElementById('scored').textContent.replace(/,/g, '')) > 2800",
                           timeout=20_000)

    assert "sha256:" in page.text_content("#models")
    assert _number(page.text_content("#p99")) > 0
    decisions = {row.get_attribute("data-decision"): _number(row.query_selector("td.n").text_content())
                 for row in page.query_selector_all("#decisions tr")}
    assert set(decisions) == {"approve", "review", "reject"}
    assert decisions["approve"] > 0
    reasons = [row.get_attribute("data-reason") for row in page.query_selector_all("#dead-letters tr")]
    assert "malformed_json" in reasons or "wrong_type" in reasons, reasons
    drift = {row.get_attribute("data-feature"): row.query_selector("td.n").text_content()
             for row in page.query_selector_all("#drift tbody tr")}
    assert "amount" in drift and "merchant_category" in drift
    assert drift["amount"] != NO_VALUE  # the window holds enough events for a PSI
    assert page.eval_on_selector("#chart-rate", "c => c.getContext('2d').getImageData(0, 0, c.width, c.height)"
                                 ".data.some(v => v !== 0)")
    if SCREENSHOT:
        page.screenshot(path=SCREENSHOT, full_page=True)
