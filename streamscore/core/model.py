"""The model runner protocol: what the scoring core calls. Runners (``streamscore.runners``) implement it."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class ModelRunner(Protocol):
    name: str
    version: str
    provider: str
    """The execution provider actually in use, for logs and metrics."""

    def load(self) -> None:
        """Load, check against the feature spec and warm up; raises ModelError."""

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """float32 matrix [rows, features] -> float scores [rows]; may raise on bad rows."""
        ...

    def close(self) -> None: ...
