"""Metrics: the array-fed histogram counts exactly as a Prometheus histogram would."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streamscore.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, BatchHistogram, Metrics

SMALL_BUCKETS = (0.5, 1.0, 2.5, 10.0)


@pytest.fixture
def make_histogram() -> Callable[..., BatchHistogram]:
    def make(buckets: Sequence[float] = SMALL_BUCKETS, name: str = "test_seconds") -> BatchHistogram:
        return BatchHistogram(name, "A test histogram.", buckets)

    return make


def samples(collector: BatchHistogram | Histogram, name: str) -> dict[str, float]:
    """``le -> cumulative count`` for the buckets, plus ``count`` and ``sum``."""
    out: dict[str, float] = {}
    for family in collector.collect():
        for s in family.samples:
            if s.name == f"{name}_bucket":
                out[str(float(s.labels["le"]))] = s.value
            elif s.name in (f"{name}_count", f"{name}_sum"):
                out[s.name.rsplit("_", 1)[1]] = s.value
    return out


def test_bucket_bounds_are_inclusive(make_histogram: Callable[..., BatchHistogram]) -> None:
    h = make_histogram()
    h.observe_many(np.array([0.5, 1.0, 1.0000001, 10.0, 10.5, -3.0, 0.0]))
    assert samples(h, "test_seconds") == {
        "0.5": 3, "1.0": 4, "2.5": 5, "10.0": 6, "inf": 7, "count": 7, "sum": pytest.approx(20.0000001)}
    assert h.count == 7


def test_empty_observations_change_nothing(make_histogram: Callable[..., BatchHistogram]) -> None:
    h = make_histogram()
    h.observe_many(np.array([]))
    assert h.count == 0
    assert samples(h, "test_seconds") == {"0.5": 0, "1.0": 0, "2.5": 0, "10.0": 0, "inf": 0, "count": 0, "sum": 0}


@settings(max_examples=100, deadline=None)
@given(
    buckets=st.sampled_from([SMALL_BUCKETS, LATENCY_BUCKETS, tuple(float(b) for b in BATCH_BUCKETS)]),
    batches=st.lists(st.lists(st.one_of(st.floats(-1.0, 100.0), st.sampled_from(LATENCY_BUCKETS + SMALL_BUCKETS),
                                        st.floats(0, 1e6)), max_size=30), max_size=5),
)
def test_observe_many_matches_prometheus_client(buckets: tuple[float, ...], batches: list[list[float]]) -> None:
    ours = BatchHistogram("h", "doc", buckets)
    theirs = Histogram("h", "doc", buckets=buckets, registry=CollectorRegistry())
    for batch in batches:
        ours.observe_many(np.array(batch, dtype=np.float64))
        for v in batch:
            theirs.observe(v)
    got, expected = samples(ours, "h"), samples(theirs, "h")
    assert got.pop("sum") == pytest.approx(expected.pop("sum"), rel=1e-9, abs=1e-9)
    assert got == expected
    assert ours.count == sum(len(b) for b in batches)


def test_float32_arrays_are_bucketed_by_their_exact_value(make_histogram: Callable[..., BatchHistogram]) -> None:
    h = make_histogram(buckets=(0.1, 0.2))
    h.observe_many(np.array([0.1], dtype=np.float32))  # float32(0.1) is just above 0.1
    assert samples(h, "test_seconds")["0.1"] == 0 and samples(h, "test_seconds")["0.2"] == 1


def quantile_reference(values: Sequence[float], bounds: Sequence[float], q: float) -> float:
    """The smallest bucket bound with at least q of the observations at or below it."""
    for b in bounds:
        if sum(1 for v in values if v <= b) >= q * len(values):
            return b
    return math.inf


def test_quantile(make_histogram: Callable[..., BatchHistogram]) -> None:
    h = make_histogram()
    assert math.isnan(h.quantile(0.5)), "nothing observed yet"
    h.observe_many(np.array([0.1, 0.2, 0.7, 2.0, 50.0]))
    assert h.quantile(0.4) == 0.5
    assert h.quantile(0.5) == 1.0
    assert h.quantile(0.6) == 1.0
    assert h.quantile(0.8) == 2.5
    assert h.quantile(0.81) == math.inf
    assert h.quantile(1.0) == math.inf


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(0, 20), min_size=1, max_size=50), q=st.floats(0.01, 1.0))
def test_quantile_is_the_bucket_holding_it(values: list[float], q: float) -> None:
    h = BatchHistogram("h", "doc", SMALL_BUCKETS)
    h.observe_many(np.array(values))
    assert h.quantile(q) == quantile_reference(values, SMALL_BUCKETS, q)


def test_metrics_export_through_their_own_registry() -> None:
    m = Metrics()
    m.end_to_end.observe_many(np.array([0.004, 0.02, 0.02, 3.0]))
    m.count_decisions(["approve", "review", "reject"], np.array([0, 0, 2, 0]))
    m.count_decisions(["approve", "review", "reject"], np.array([], dtype=np.int64))
    get = m.registry.get_sample_value
    assert get("streamscore_decisions_total", {"decision": "approve"}) == 3
    assert get("streamscore_decisions_total", {"decision": "reject"}) == 1
    assert get("streamscore_decisions_total", {"decision": "review"}) is None, "no series for a label never seen"
    assert get("streamscore_end_to_end_latency_seconds_bucket", {"le": "0.005"}) == 1
    assert get("streamscore_end_to_end_latency_seconds_bucket", {"le": "0.02"}) == 3
    assert get("streamscore_end_to_end_latency_seconds_count") == 4
    text = generate_latest(m.registry).decode()
    assert 'streamscore_end_to_end_latency_seconds_bucket{le="+Inf"} 4.0' in text
    assert Metrics().registry is not m.registry, "no global state"
