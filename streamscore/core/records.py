"""The types that flow between stages, and the dead-letter reasons. Engine-neutral: no Kafka here."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import numpy as np

TopicPartition = tuple[str, int]
"""A source partition: (topic, partition)."""

Headers = list[tuple[str, bytes | None]]

UNREADABLE_HEADERS: tuple[tuple[str, bytes | None], ...] = (
    ("streamscore.headers.dropped", b"a header name is not UTF-8; the input's headers are left out"),)
"""An input's headers when one of their names is not UTF-8 (other clients can write such names; the
Kafka clients streamscore's engines use cannot read them): every engine puts this in their place."""


class SourceMessage(Protocol):
    """A consumed event as an engine hands it over (``confluent_kafka.Message`` is one)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> Headers | None: ...
    def timestamp(self) -> tuple[int, int]: ...


class Reason(StrEnum):
    """Why an event went to the dead-letter topic: the ``streamscore.reason`` header and the
    ``reason`` label of ``streamscore_events_dead_lettered_total``."""

    EMPTY = "empty"
    """The message has no value, or an empty one."""
    OVERSIZE = "oversize"
    """The value is larger than ``batching.max_message_bytes``; it is dead-lettered truncated."""
    MALFORMED_JSON = "malformed_json"
    """The value is not JSON (or not UTF-8)."""
    NON_FINITE = "non_finite"
    """A NaN or infinite number: a JSON literal, a number that overflows, or a feature that does
    not fit a float32."""
    NOT_AN_OBJECT = "not_an_object"
    """The JSON is an array, string, number ... rather than an object."""
    TOO_DEEP = "too_deep"
    """Objects and arrays nest deeper than ``batching.max_json_depth``."""
    MISSING_FIELD = "missing_field"
    """A required feature's field is absent or null."""
    WRONG_TYPE = "wrong_type"
    """A feature's field holds the wrong JSON type (or a path step is not an object)."""
    MODEL_ERROR = "model_error"
    """The model raised on this row (isolated by bisection) or returned a non-finite score."""
    NO_MODEL = "no_model"
    """Routing by segment (``graph.type: segments``): the event's segment has no route and the
    graph no ``default`` model."""
    OUTPUT_TOO_LARGE = "output_too_large"
    """The event was scored but its output record is larger than the destination accepts (the
    topic's ``max.message.bytes``, often through a large field in ``output.copy_fields``); it is
    dead-lettered instead, truncated like ``oversize``, and its detail names the topic and size."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """An event that cannot be scored: ``reason`` is its code, ``detail`` says why in words."""

    index: int
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class ShadowBatch:
    """The shadow's part of a scored batch: its records (one per scored event) and how far it
    agreed with the champion on the rows it scored."""

    outputs: list[bytes]
    compared: int
    """Rows the shadow scored (a row it failed on is recorded with a null score, not compared)."""
    agreed: int
    """Of those, rows where its decision equals the champion's."""
    abs_difference: float
    """Sum over those rows of |shadow score - champion score|."""


@dataclass(frozen=True, slots=True)
class ScoredBatch:
    """What the scoring core made of one batch of messages.

    ``scored`` are positions in the batch, each with its rendered output record in ``outputs``, its
    score and its label index in ``decisions``; every other position has a ``Rejection``.
    """

    scored: list[int]
    outputs: list[bytes]
    scores: np.ndarray
    decisions: np.ndarray
    rejections: list[Rejection]
    inference_seconds: float
    features: np.ndarray | None = None
    """The feature matrix of the ``scored`` rows, in their order (for drift monitoring)."""
    shadow: ShadowBatch | None = None
    """With a ``shadow`` model: its records for the shadow topic, one per scored event."""
    canary_rows: int = 0
    """Scored events the canary scored and decided for (instead of the champion)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected event as the dead-letter topic receives it: the input's key, its value (truncated
    when oversize) and its headers followed by the ``streamscore.*`` ones that say why."""

    key: bytes | None
    value: bytes | None
    headers: Headers
