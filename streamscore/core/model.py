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


@runtime_checkable
class SegmentedRunner(StagedRunner, Protocol):
    """A runner that routes each row by a value of its event (``core.segments.SegmentRouter``).

    The scorer reads ``field`` from each event, turns the values into route indices with
    ``route`` (-1: no model) and appends them to the matrix as its last column, so that a batch
    (or any slice of it, when bisecting) carries its own routing."""

    field: str

    def route(self, values: Sequence[object]) -> np.ndarray:
        """Segment values -> intp route index per row, -1 where no model takes the row."""
        ...


@dataclass(frozen=True, slots=True)
class Stage:
    """A stage that decides rows: its name and the versions of the models behind its score."""

    name: str
    models: dict[str, str]
