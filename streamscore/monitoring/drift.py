"""Drift and data quality of the live stream against a reference profile, over a sliding window.

Pure numpy over fixed bins: per batch, one ``Bins.assign`` per feature and one ``bincount`` over all
bins at once (O(batch)); the population stability index is computed when asked (a scrape), not per
batch. The window is a ring of ``slots`` counts: a slot closes once it holds ``window_events /
slots`` events, and the window is the sum of the ring, so old events leave it a slot at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamscore.monitoring.bins import Bins

PSI_FLOOR = 1e-4
"""Bin shares are floored at this before the logarithm: an empty bin on one side stays finite."""


def psi(expected: np.ndarray, actual: np.ndarray, floor: float = PSI_FLOOR) -> float:
    """Population stability index of ``actual`` against ``expected`` (counts or shares per bin):
    sum over bins of (a - e) * ln(a / e), with shares floored at ``floor``. Below 0.1 is usually
    read as stable, above 0.25 as a shift."""
    e = np.maximum(np.asarray(expected, np.float64) / max(float(np.sum(expected)), 1.0), floor)
    a = np.maximum(np.asarray(actual, np.float64) / max(float(np.sum(actual)), 1.0), floor)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True, slots=True)
class Watched:
    """One monitored feature: its bins, reference counts, and the default it is filled with when absent."""

    name: str
    bins: Bins
    reference: np.ndarray
    default: float | None = None
    """An optional feature's default: the share of rows holding it is the default rate."""
    reference_default_rate: float = 0.0


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    name: str
    psi: float
    default_rate: float | None
    unknown_rate: float | None
    reference_default_rate: float | None
    reference_unknown_rate: float | None


@dataclass(frozen=True, slots=True)
class DriftSnapshot:
    """The window's figures; ``psi`` values are NaN until the window holds ``min_events``."""

    events: int
    features: list[FeatureDrift]
    score_psi: float


BIN_AT_ROWS = 256
"""Rows of small batches gathered before they are binned together (see ``DriftMonitor.observe``)."""


class DriftMonitor:
    """Counts the live stream's bins; ``observe`` per batch from the pipeline, ``snapshot`` per scrape."""

    def __init__(self, features: Sequence[Watched], score: Watched, window_events: int = 10_000,
                 slots: int = 10, min_events: int = 500) -> None:
        self.features = list(features)
        self.score = score
        watched = [*self.features, score]
        sizes = [w.bins.size for w in watched]
        self._offsets = np.cumsum([0, *sizes])
        self._defaults = [(i, w.default) for i, w in enumerate(self.features) if w.default is not None]
        self._counts = np.zeros((slots, int(self._offsets[-1])), dtype=np.int64)
        self._default_counts = np.zeros((slots, len(self.features)), dtype=np.int64)
        self._events = np.zeros(slots, dtype=np.int64)
        self._slot = 0
        self._slot_events = max(1, window_events // slots)
        self.min_events = min_events
        self._lock = threading.Lock()
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_rows = 0
        self._binned_at = min(BIN_AT_ROWS, self._slot_events)

    def observe(self, matrix: np.ndarray, scores: np.ndarray) -> None:
        """Add a batch of scored rows (their feature matrix and scores) to the window. Small batches
        are binned together once they hold ``BIN_AT_ROWS`` rows (or a slot's worth, or at the next
        snapshot): binning costs about the same whatever the rows, so per batch it dominated the
        monitor's cost at low rates."""
        if matrix.shape[0] == 0:
            return
        with self._lock:
            self._pending.append((matrix, scores))
            self._pending_rows += matrix.shape[0]
            if self._pending_rows < self._binned_at:
                return
            pending = self._take_pending()
        self._bin(*pending)

    def _take_pending(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows waiting to be binned, as one matrix and one score vector (call under the lock)."""
        pending, self._pending, self._pending_rows = self._pending, [], 0
        if len(pending) == 1:
            return pending[0]
        return np.concatenate([m for m, _ in pending]), np.concatenate([s for _, s in pending])

    def _bin(self, matrix: np.ndarray, scores: np.ndarray) -> None:
        rows = matrix.shape[0]
        if rows == 0:
            return
        indices = [w.bins.assign(matrix) + self._offsets[i] for i, w in enumerate(self.features)]
        indices.append(self.score.bins.assign(scores.reshape(-1, 1)) + self._offsets[-2])
        counts = np.bincount(np.concatenate(indices), minlength=self._counts.shape[1])
        defaults = [(i, int(np.count_nonzero(matrix[:, self.features[i].bins.column] == d)))
                    for i, d in self._defaults]
        with self._lock:
            slot = self._slot
            self._counts[slot] += counts
            for i, n in defaults:
                self._default_counts[slot, i] += n
            self._events[slot] += rows
            if self._events[slot] >= self._slot_events:  # the oldest slot becomes the open one
                self._slot = (slot + 1) % len(self._events)
                self._counts[self._slot] = 0
                self._default_counts[self._slot] = 0
                self._events[self._slot] = 0

    def snapshot(self) -> DriftSnapshot:
        with self._lock:
            pending = self._take_pending() if self._pending else None
        if pending is not None:
            self._bin(*pending)
        with self._lock:
            counts = self._counts.sum(axis=0)
            defaults = self._default_counts.sum(axis=0)
            events = int(self._events.sum())
        ready = events >= self.min_events
        result = []
        for i, w in enumerate(self.features):
            live = counts[self._offsets[i]:self._offsets[i + 1]]
            unknown = w.bins.unknown_bin
            ref_total = max(float(w.reference.sum()), 1.0)
            result.append(FeatureDrift(
                w.name,
                psi(w.reference, live) if ready else float("nan"),
                (float(defaults[i]) / events if events else float("nan")) if w.default is not None else None,
                (float(live[unknown]) / events if events else float("nan")) if unknown is not None else None,
                w.reference_default_rate if w.default is not None else None,
                float(w.reference[unknown]) / ref_total if unknown is not None else None,
            ))
        score = counts[self._offsets[-2]:]
        return DriftSnapshot(events, result, psi(self.score.reference, score) if ready else float("nan"))
