"""The scoring core: raw messages -> decoded events -> features -> scores -> decisions -> records.

Pure and engine-neutral: it sees ``SourceMessage`` objects and returns bytes, so the Kafka engine,
a Faust engine, batch runs and an HTTP endpoint can all drive it. Nothing here raises on bad input:
every message comes back either scored or rejected with a reason. The one exception is a model
that fails by itself rather than because of its rows: ``ModelUnavailable``, which rejects nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import methodcaller
from typing import Any

import numpy as np

from streamscore.config import DecisionSettings, FeatureSettings, Settings
from streamscore.core.decisions import DecisionPolicy
from streamscore.core.decode import decode
from streamscore.core.features import FeatureExtractor, gather
from streamscore.core.model import ModelRunner, Stage, StagedRunner
from streamscore.core.records import DeadLetter, Headers, Reason, Rejection, ScoredBatch, SourceMessage
from streamscore.core.render import dead_letter, score_records
from streamscore.errors import ModelUnavailable

log = logging.getLogger(__name__)

_value = methodcaller("value")


@dataclass(frozen=True, slots=True)
class ScoringSpec:
    """What the core needs to know, and nothing about where events come from or go."""

    features: Sequence[FeatureSettings]
    decisions: DecisionSettings
    copy_fields: Sequence[str] = ()
    max_bytes: int = 1_000_000
    """Values larger than this are rejected unread (``oversize``)."""
    max_depth: int = 64
    """JSON nested deeper than this is rejected (``too_deep``)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> ScoringSpec:
        b = settings.batching
        return cls(settings.features, settings.decisions, tuple(settings.output.copy_fields),
                   b.max_message_bytes, b.max_json_depth)


Call = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""matrix -> (scores, index of the deciding stage per row)."""


def staged_call(runner: ModelRunner) -> Call:
    """The runner's call with stages: a graph's own, or stage 0 for every row of a single model."""
    if isinstance(runner, StagedRunner):
        return runner.predict_staged

    def call(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return runner.predict(matrix), np.zeros(matrix.shape[0], dtype=np.intp)
    return call


def predict_isolating(runner: ModelRunner, matrix: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
    """Scores for all rows; if the model raises, bisect to find the rows that make it raise.

    Returns the scores (NaN where a row failed) and the failing rows with the error message.
    """
    scores, _, failed = isolate(staged_call(runner), matrix)
    return scores, failed


def isolate(call: Call, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """``predict_isolating`` over a call with stages: scores, stages and the failing rows."""
    try:
        return *call(matrix), {}
    except ModelUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - model failures are data-dependent; isolate them
        return bisect(call, matrix, exc)


def bisect(call: Call, matrix: np.ndarray, exc: Exception) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """``matrix`` made ``call`` raise ``exc``: score each half apart, down to the failing rows."""
    if matrix.shape[0] == 1:
        return (np.full(1, np.nan, dtype=np.float32), np.zeros(1, dtype=np.intp),
                {0: f"{type(exc).__name__}: {str(exc)[:200]}"})
    mid = matrix.shape[0] // 2
    left, left_stages, left_failed = isolate(call, matrix[:mid])
    right, right_stages, right_failed = isolate(call, matrix[mid:])
    failed = {**left_failed, **{mid + row: err for row, err in right_failed.items()}}
    return np.concatenate([left, right]), np.concatenate([left_stages, right_stages]), failed


class Scorer:
    """One ``score`` call per batch; holds the compiled feature, decision and output specs."""

    def __init__(self, spec: ScoringSpec, runner: ModelRunner) -> None:
        self.spec = spec
        self.runner = runner
        self._call = staged_call(runner)
        self.extractor = FeatureExtractor(spec.features)
        self.policy = DecisionPolicy(spec.decisions)
        self.copy_fields = list(spec.copy_fields)
        self._probe = np.zeros((1, self.extractor.width), dtype=np.float32)
        """A row the model scored: when a batch fails, a failure on it too means the model is down."""

    def score(self, messages: Sequence[SourceMessage]) -> ScoredBatch:
        """Score a batch; raises ModelUnavailable (having rejected nothing) when the model itself fails."""
        spec = self.spec
        events, rejections = decode(list(map(_value, messages)), spec.max_bytes, spec.max_depth)
        rows = [i for i, e in enumerate(events) if e is not None]
        valid_events = [events[i] for i in rows]
        paths: dict[str, list[Any]] = {}
        extraction = self.extractor.extract(valid_events, paths)
        keep: list[int] = []
        for row, reason in zip(rows, extraction.reasons, strict=True):
            if reason is None:
                keep.append(row)
            else:
                rejections.append(Rejection(row, reason[0], reason[1]))
        matrix = extraction.matrix
        if len(keep) != len(rows):
            matrix = matrix[extraction.valid]

        started = time.perf_counter()
        scores, stages, failed = (self._predict(matrix) if len(keep)
                                  else (np.zeros(0, np.float32), np.zeros(0, np.intp), {}))
        inference = time.perf_counter() - started
        finite = np.isfinite(scores)
        if failed or not finite.all():
            for pos in np.flatnonzero(~finite).tolist():
                detail = failed.get(pos, "model returned a non-finite score")
                rejections.append(Rejection(keep[pos], Reason.MODEL_ERROR, detail))
            keep = [row for row, ok in zip(keep, finite.tolist(), strict=True) if ok]
            scores = scores[finite]
            stages = stages[finite]
        decisions = self.policy.indices(scores)
        position = {row: i for i, row in enumerate(rows)}
        copied = [(name, gather(valid_events, name, paths)) for name in self.copy_fields]
        outputs = score_records(messages, [position[row] for row in keep], keep, copied, scores, decisions,
                                self.policy.labels, (self.runner.name, self.runner.version), int(time.time() * 1000),
                                self._graph(stages))
        rejections.sort(key=lambda r: r.index)
        return ScoredBatch(keep, outputs, scores, decisions, rejections, inference)

    def dead_letter(self, msg: SourceMessage, rejection: Rejection, headers: Headers) -> DeadLetter:
        """The dead-letter record of a rejected message; ``headers`` as the engine could read them."""
        return dead_letter(msg, rejection, headers, self.spec.max_bytes, int(time.time() * 1000))

    def probe(self) -> None:
        """Score a row the model scored before; raises ModelUnavailable if that fails now."""
        try:
            self.runner.predict(self._probe)
        except Exception as exc:  # any failure on a known-good row is the model's
            raise ModelUnavailable(f"model {self.runner.name} fails on a row it scored before: "
                                   f"{type(exc).__name__}: {str(exc)[:200]}") from exc

    def _graph(self, stages: np.ndarray) -> tuple[Sequence[Stage], np.ndarray] | None:
        """For a graph of models: its stages and the deciding stage of each scored row."""
        return (self.runner.stages, stages) if isinstance(self.runner, StagedRunner) else None

    def _predict(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        """The model's scores, bisecting to the failing rows when it raises; but when a row it has
        scored before fails too, the model is failing, not the rows: ModelUnavailable."""
        runner = self.runner
        try:
            scores, stages = self._call(matrix)
        except ModelUnavailable:
            raise
        except MemoryError as exc:
            raise ModelUnavailable(f"model {runner.name}: out of memory") from exc
        except Exception as exc:  # noqa: BLE001 - the probe tells the model's failure from the rows'
            self.probe()
            return bisect(self._call, matrix, exc)  # the whole batch failed once: start with its halves
        if np.isfinite(scores[:1]).all():
            self._probe = matrix[:1].copy()
        return scores, stages, {}
