"""Fixed bins over the feature matrix: each feature's values -> bin indices, one numpy call per feature.

A profile fixes the bins once (from the reference data); the live stream is binned the same way, so
reference and live counts line up bin for bin. Category features keep one bin per category and a
last bin for unknown (or missing) values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUMERIC_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Inner bin edges of a numeric feature: the reference deciles (repeated values merge bins)."""
SCORE_QUANTILES = (*NUMERIC_QUANTILES, 0.95, 0.99)
"""The score's edges add tail bins: the decisions that matter live in the top percent."""


@dataclass(frozen=True, slots=True)
class Bins:
    """How one feature's matrix columns map to bins.

    ``kind``: ``numeric`` (``edges``: bin i holds edges[i-1] <= x < edges[i]), ``index`` (a category
    index column; ``size - 1`` is the unknown bin) or ``one_hot`` (``size - 1`` columns; no column set
    is the unknown bin).
    """

    kind: str
    column: int
    size: int
    edges: np.ndarray
    unknown_value: float = -1.0

    @classmethod
    def numeric(cls, column: int, edges: list[float]) -> Bins:
        return cls("numeric", column, len(edges) + 1, np.asarray(edges, dtype=np.float64))

    @classmethod
    def category(cls, column: int, categories: int, encoding: str, unknown_value: float = -1.0) -> Bins:
        return cls(encoding, column, categories + 1, np.zeros(0), unknown_value)

    @property
    def unknown_bin(self) -> int | None:
        return None if self.kind == "numeric" else self.size - 1

    def assign(self, matrix: np.ndarray) -> np.ndarray:
        """Bin index of every row (int64, in ``range(size)``)."""
        if self.kind == "numeric":
            return np.searchsorted(self.edges, matrix[:, self.column], side="right")
        unknown = self.size - 1
        if self.kind == "index":
            values = matrix[:, self.column]
            known = (values >= 0) & (values < unknown) & (values != self.unknown_value)
            return np.where(known, values, unknown).astype(np.int64)
        block = matrix[:, self.column:self.column + unknown]
        return np.where(block.any(axis=1), block.argmax(axis=1), unknown)


def quantile_edges(values: np.ndarray, quantiles: tuple[float, ...]) -> list[float]:
    """Distinct quantiles of ``values``: the inner edges of numeric bins (none for an empty sample)."""
    if values.size == 0:
        return []
    return sorted({float(q) for q in np.quantile(values.astype(np.float64), quantiles)})
