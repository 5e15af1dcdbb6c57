"""The model runner protocol: what the scoring core calls. Runners (``streamscore.runners``) implement it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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


@runtime_checkable
class StagedRunner(ModelRunner, Protocol):
    """A runner made of stages (``core.graph.ModelGraph``): it also says which stage decided each
    row, and the versions of the models behind each stage, for the score records."""

    stages: Sequence[Stage]

    def predict_staged(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores [rows] and the index into ``stages`` of the stage that decided each row."""
        ...


@dataclass(frozen=True, slots=True)
class Stage:
    """A stage that decides rows: its name and the versions of the models behind its score."""

    name: str
    models: dict[str, str]
