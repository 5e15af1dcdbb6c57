"""The metrics endpoint during a live run: counters and histograms move and agree with the events."""

from __future__ import annotations

import contextlib
import signal
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from streamscore.demo.transactions import TransactionGenerator
from tests.support import OutputReader, ServiceProcess, Topics, WaitTimeout, labelled, produce, samples, wait_for

pytestmark = pytest.mark.integration


def consumer_lag(values: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in values.items() if k.startswith("streamscore_consumer_lag{")}


def test_metrics_move_and_agree_with_the_events(
    bootstrap: str, topics: Callable[..., Topics], write_config: Callable[..., Path],
    service: Callable[..., ServiceProcess], output_reader: Callable[..., OutputReader],
) -> None:
    t = topics()
    inputs = [(k, v, None) for k, v in TransactionGenerator(seed=21, malformed_rate=0.05).encoded(6000)]
    proc = service(write_config(t))
    proc.wait_ready()
    before = samples(proc.metrics())
    assert before["streamscore_events_consumed_total"] == 0
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/healthz", timeout=5) as r:
        assert r.status == 200

    produce(bootstrap, t.source, inputs)
    outputs = output_reader(t).read_until(lambda records: len(records) >= len(inputs), 60, f"{len(inputs)} outputs")

    def settled() -> bool:
        # outputs are visible a moment before their acknowledgement is counted, and the lag is
        # reported at the next commit (every commit_interval_ms) after that
        values = samples(proc.metrics())
        return (values["streamscore_end_to_end_latency_seconds_count"] >= len(inputs)
                and set(consumer_lag(values).values()) == {0.0})

    with contextlib.suppress(WaitTimeout):  # the assertions below say what did not settle
        wait_for(settled, 20, "every acknowledgement counted and no lag left")
    after = samples(proc.metrics())

    scored = sum(1 for r in outputs if r.topic == t.destination)
    dead = len(outputs) - scored
    assert after["streamscore_events_consumed_total"] == len(inputs)
    assert after["streamscore_events_scored_total"] == scored
    dead_by_reason = labelled(after, "streamscore_events_dead_lettered_total")
    assert sum(dead_by_reason.values()) == dead > 0
    downstream_reasons: dict[str, int] = {}
    for r in outputs:
        if r.topic == t.dead_letter:
            reason = r.headers["streamscore.reason"].decode()
            downstream_reasons[reason] = downstream_reasons.get(reason, 0) + 1
    assert dead_by_reason == downstream_reasons
    assert sum(labelled(after, "streamscore_decisions_total").values()) == scored
    assert after["streamscore_batch_size_sum"] == len(inputs)
    assert after["streamscore_batch_size_count"] == after["streamscore_model_inference_seconds_count"] > 0
    assert after["streamscore_model_inference_seconds_sum"] > 0
    assert after["streamscore_end_to_end_latency_seconds_count"] == len(inputs)
    assert after['streamscore_end_to_end_latency_seconds_bucket{le="+Inf"}'] == len(inputs)
    assert after["streamscore_in_flight_events"] == 0
    assert after["streamscore_commits_total"] > 0
    assert after["streamscore_assigned_partitions"] == 4
    lag = consumer_lag(after)
    assert len(lag) == 4 and set(lag.values()) == {0.0}, f"caught up on every partition: {lag}"

    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.log()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/readyz", timeout=2)
