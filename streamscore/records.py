"""The types that flow between stages. Engine-neutral: no Kafka import here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

Headers = list[tuple[str, bytes | None]]


class SourceMessage(Protocol):
    """A consumed event as an engine hands it over (``confluent_kafka.Message`` is one)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> Headers | None: ...
    def timestamp(self) -> tuple[int, int]: ...


@dataclass(frozen=True, slots=True)
class Rejection:
    """An event that cannot be scored: ``reason`` is a short code (a metrics label), ``detail`` says why."""

    index: int
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class ScoredBatch:
    """What the scoring core made of one batch of messages.

    ``scored`` are positions in the batch, each with its rendered output record in ``outputs`` and
    its label index in ``decisions``; every other position has a ``Rejection``.
    """

    scored: list[int]
    outputs: list[bytes]
    scores: np.ndarray
    decisions: np.ndarray
    rejections: list[Rejection]
    inference_seconds: float
