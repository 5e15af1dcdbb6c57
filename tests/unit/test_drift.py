"""The drift math over fixed bins: PSI against a hand computation, binning, the sliding window,
and a profile round trip that tells a shifted stream from an unshifted one."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from streamscore.config import FeatureSettings, MonitoringSettings, Settings
from streamscore.errors import ConfigError
from streamscore.monitoring.bins import Bins, quantile_edges
from streamscore.monitoring.drift import DriftMonitor, Watched, psi
from streamscore.monitoring.profile import build_profile, monitor_from_profile
from streamscore.service import build_drift_monitor

DEMO = Path(__file__).resolve().parents[2] / "streamscore" / "demo"


def test_psi_matches_a_hand_computation() -> None:
    # shares e = (0.5, 0.3, 0.2), a = (0.4, 0.4, 0.2):
    # (0.4-0.5) ln(0.4/0.5) + (0.4-0.3) ln(0.4/0.3) + 0 = 0.1*0.22314 + 0.1*0.28768 = 0.051083
    assert psi(np.array([50, 30, 20]), np.array([4, 4, 2])) == pytest.approx(0.0510826, abs=1e-6)


def test_psi_is_zero_for_equal_shares_and_finite_for_an_empty_bin() -> None:
    assert psi(np.array([1, 2, 3]), np.array([10, 20, 30])) == pytest.approx(0.0)
    # an empty live bin is floored at 1e-4: (1e-4 - 0.5) ln(1e-4 / 0.5) + (1 - 0.5) ln(1 / 0.5)
    expected = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + 0.5 * math.log(2)
    assert psi(np.array([5, 5]), np.array([0, 9])) == pytest.approx(expected)


def test_bins_of_each_kind() -> None:
    matrix = np.array([[0.5, 1, 0, 2], [2.0, 0, 0, -1], [7.0, 0, 0, 9]], dtype=np.float32)
    assert Bins.numeric(0, [1.0, 2.0]).assign(matrix).tolist() == [0, 2, 2]
    # one-hot over columns 1-2: the second and third rows set none (unknown, the last bin)
    assert Bins.category(1, 2, "one_hot").assign(matrix).tolist() == [0, 2, 2]
    # index column 3 of 3 categories: -1 (the unknown value) and 9 (out of range) are unknown
    assert Bins.category(3, 3, "index").assign(matrix).tolist() == [2, 3, 3]
    assert quantile_edges(np.array([1.0, 1.0, 1.0, 5.0]), (0.25, 0.5)) == [1.0]


def _monitor(window: int = 100, slots: int = 4, min_events: int = 10) -> DriftMonitor:
    feature = Watched("x", Bins.numeric(0, [0.5]), np.array([50.0, 50.0]), default=0.0, reference_default_rate=0.5)
    score = Watched("score", Bins.numeric(0, [0.5]), np.array([90.0, 10.0]))
    return DriftMonitor([feature], score, window_events=window, slots=slots, min_events=min_events)


def test_the_window_forgets_old_slots() -> None:
    monitor = _monitor()
    ones, zeros = np.ones((25, 1), np.float32), np.zeros((25, 1), np.float32)
    scores = np.zeros(25, np.float32)
    for _ in range(4):  # a full window of zeros: half the reference shares, a shift
        monitor.observe(zeros, scores)
    first = monitor.snapshot()
    assert first.events == 75  # the fourth slot closed, and the oldest was emptied to reopen
    assert first.features[0].default_rate == 1.0
    assert first.features[0].psi > 1.0
    for _ in range(2):
        monitor.observe(ones, scores)
    mixed = monitor.snapshot().features[0]
    assert mixed.default_rate == pytest.approx(25 / 75)
    assert mixed.psi < first.features[0].psi


def test_small_batches_binned_together_count_as_one_batch_would() -> None:
    """Batches of a few rows wait to be binned together; a snapshot counts those still waiting."""
    rng = np.random.default_rng(3)
    matrix = rng.random((90, 1)).astype(np.float32)
    matrix[::7] = 0.0  # some defaults
    scores = rng.random(90).astype(np.float32)
    whole, pieces = _monitor(window=1000, slots=2), _monitor(window=1000, slots=2)
    whole.observe(matrix, scores)
    for start in range(0, 90, 4):
        pieces.observe(matrix[start:start + 4], scores[start:start + 4])
    assert pieces.snapshot() == whole.snapshot()


def test_psi_is_nan_until_the_window_holds_min_events() -> None:
    monitor = _monitor(min_events=50)
    monitor.observe(np.zeros((10, 1), np.float32), np.zeros(10, np.float32))
    snap = monitor.snapshot()
    assert math.isnan(snap.features[0].psi) and math.isnan(snap.score_psi)
    assert snap.features[0].default_rate == 1.0


SPECS = [
    FeatureSettings(name="amount", dtype="float"),
    FeatureSettings(name="kind", dtype="category", categories=["a", "b"], encoding="one_hot"),
    FeatureSettings(name="n", dtype="int", required=False, default=0),
]


def _matrix(rng: np.random.Generator, rows: int, shift: float = 0.0, unknown: float = 0.0) -> np.ndarray:
    m = np.zeros((rows, 4), np.float32)
    m[:, 0] = rng.lognormal(3.0, 1.0, rows) + shift
    kind = rng.integers(0, 2, rows)
    kind[rng.random(rows) < unknown] = 2
    known = kind < 2
    m[np.flatnonzero(known), 1 + kind[known]] = 1.0
    m[:, 3] = rng.poisson(2.0, rows)
    return m


def test_a_profile_tells_a_shifted_stream_from_an_unshifted_one() -> None:
    rng = np.random.default_rng(7)
    reference = _matrix(rng, 20_000)
    profile = build_profile(SPECS, reference, [0.0, 0.0, 0.0], rng.random(20_000), "test", {})
    assert [f["name"] for f in profile["features"]] == ["amount", "kind", "n"]

    def live(**kwargs: float) -> dict[str, float]:
        monitor = monitor_from_profile(profile, SPECS, window_events=5000, slots=5, min_events=1000)
        for _ in range(5):
            monitor.observe(_matrix(rng, 1000, **kwargs), rng.random(1000).astype(np.float32))
        snap = monitor.snapshot()
        return {f.name: f.psi for f in snap.features} | {
            "unknown": snap.features[1].unknown_rate or 0.0, "score": snap.score_psi}

    steady, shifted, unknown = live(), live(shift=40.0), live(unknown=0.3)
    assert steady["amount"] < 0.05 and steady["score"] < 0.05
    assert shifted["amount"] > 0.5
    assert steady["unknown"] == 0.0 and unknown["unknown"] == pytest.approx(0.3, abs=0.03)
    assert unknown["kind"] > 0.25


def test_a_profile_of_other_features_is_refused() -> None:
    rng = np.random.default_rng(1)
    profile = build_profile(SPECS, _matrix(rng, 100), [0.0] * 3, rng.random(100), "test", {})
    other = [*SPECS[:1], FeatureSettings(name="kind", dtype="category", categories=["a", "c"], encoding="one_hot"),
             SPECS[2]]
    with pytest.raises(ConfigError, match="feature 'kind' differs"):
        monitor_from_profile(profile, other, window_events=10, slots=1, min_events=1)


def _demo_settings(tmp_path: Path, **monitoring: Any) -> Settings:
    """The demo configuration, its model copied into ``tmp_path`` (with its profile)."""
    import shutil

    for name in ("fraud_model.onnx", "fraud_model.profile.json"):
        shutil.copy(DEMO / name, tmp_path / name)
    config = yaml.safe_load((DEMO / "config.yaml").read_text())
    config["model"]["path"] = str(tmp_path / "fraud_model.onnx")
    config["monitoring"] = monitoring
    return Settings.model_validate(config)


def test_the_profile_next_to_the_model_is_found(tmp_path: Path) -> None:
    monitor = build_drift_monitor(_demo_settings(tmp_path))
    assert monitor is not None and [w.name for w in monitor.features][:2] == ["amount", "merchant_category"]
    assert build_drift_monitor(_demo_settings(tmp_path, drift=False)) is None


def test_a_named_profile_that_does_not_fit_is_refused_a_found_one_skipped(tmp_path: Path) -> None:
    settings = _demo_settings(tmp_path)
    renamed = settings.features[1].model_copy(update={"categories": ["groceries", "dining"]})
    other = settings.model_copy(update={"features": [settings.features[0], renamed, *settings.features[2:]]})
    assert build_drift_monitor(other) is None  # found next to the model: a warning, no drift
    named = other.model_copy(update={"monitoring": MonitoringSettings(profile=tmp_path / "fraud_model.profile.json")})
    with pytest.raises(ConfigError, match=r"monitoring\.profile: feature .merchant_category. differs"):
        build_drift_monitor(named)
