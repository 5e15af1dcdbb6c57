"""Scores -> decision labels, by ordered thresholds; vectorised over the batch."""

from __future__ import annotations

import numpy as np

from streamscore.config import DecisionSettings


class DecisionPolicy:
    """``default`` below the first rule; otherwise the label of the highest rule reached."""

    def __init__(self, settings: DecisionSettings) -> None:
        self.labels: list[str] = [settings.default, *(r.label for r in settings.rules)]
        self._thresholds = np.array([r.min_score for r in settings.rules], dtype=np.float64)

    def indices(self, scores: np.ndarray) -> np.ndarray:
        """Index into ``labels`` for each score (a NaN score takes the highest rule: fail closed)."""
        scores = np.asarray(scores, dtype=np.float64)
        idx = np.searchsorted(self._thresholds, scores, side="right")
        idx[np.isnan(scores)] = len(self.labels) - 1
        return idx

    def decide(self, scores: np.ndarray) -> list[str]:
        labels = self.labels
        return [labels[i] for i in self.indices(scores).tolist()]
