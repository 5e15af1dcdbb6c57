"""Challengers beside the champion: a shadow scores the same rows (its records go to a topic of
their own and it never decides), a canary scores and decides for a stable share of keys.

The share is taken by key, with CRC-32 (stable across processes, hosts and Python versions,
unlike ``hash``), so one card or account always meets the same model while the canary runs.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamscore.core.model import ModelRunner
from streamscore.errors import ModelError

KEY_SPACE = 2**32


def canary_rows(keys: Sequence[bytes | None], share: float) -> np.ndarray:
    """Per key, whether the canary takes it: CRC-32 of the key below ``share`` of 2^32 (no key: no)."""
    limit = share * KEY_SPACE
    return np.fromiter((k is not None and zlib.crc32(k) < limit for k in keys), dtype=bool, count=len(keys))


@dataclass(slots=True)
class Challenger:
    """A challenger model and the feature columns it reads (None: all of them)."""

    runner: ModelRunner
    columns: np.ndarray | None
    width: int
    """Columns of the full feature matrix (a segments graph appends its route column after them)."""

    def input(self, matrix: np.ndarray) -> np.ndarray:
        features = matrix[:, :self.width]
        return np.ascontiguousarray(features if self.columns is None else features[:, self.columns])

    @property
    def input_width(self) -> int:
        return self.width if self.columns is None else len(self.columns)


@dataclass(slots=True)
class Challengers:
    """The shadow and the canary (each optional), loaded and closed with the champion."""

    shadow: Challenger | None = None
    canary: Challenger | None = None
    share: float = 0.0
    """The canary's share of keys."""

    @property
    def runners(self) -> list[ModelRunner]:
        return [c.runner for c in (self.shadow, self.canary) if c is not None]

    def load(self) -> None:
        """Load the shadow and canary; a failure names ``shadow.model`` or ``canary.model``."""
        for key, c in (("shadow", self.shadow), ("canary", self.canary)):
            if c is None:
                continue
            try:
                c.runner.load()
            except ModelError as exc:
                text = str(exc)
                for prefix in ("model.", "features:"):
                    if text.startswith(prefix):
                        text = f"{key}.model.{text.removeprefix('model.')}"
                        break
                raise ModelError(text) from exc

    def close(self) -> None:
        for runner in self.runners:
            runner.close()
