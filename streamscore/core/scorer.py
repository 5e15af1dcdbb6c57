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
from streamscore.core.challengers import Challengers, canary_rows
from streamscore.core.decisions import DecisionPolicy
from streamscore.core.decode import decode
from streamscore.core.features import MISSING, FeatureExtractor, NotAnObject, gather
from streamscore.core.model import ModelRunner, SegmentedRunner, Stage, StagedRunner
from streamscore.core.records import DeadLetter, Headers, Reason, Rejection, ScoredBatch, ShadowBatch, SourceMessage
from streamscore.core.render import dead_letter, score_records, shadow_records
from streamscore.core.velocity import StatefulFeatures
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


@dataclass(frozen=True, slots=True)
class MatrixScores:
    """What the core made of a matrix of feature rows: a score and a label index per row, and the
    rows the model failed on (their score is not finite) with the error."""

    scores: np.ndarray
    decisions: np.ndarray
    failed: dict[int, str]


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

    def __init__(self, spec: ScoringSpec, runner: ModelRunner, challengers: Challengers | None = None,
                 state: StatefulFeatures | None = None) -> None:
        self.spec = spec
        self.runner = runner
        self.challengers = challengers or Challengers()
        self.state = state
        """Computes the stateful features' columns (an engine with state provides it)."""
        self._use(runner)
        self.extractor = FeatureExtractor(spec.features)
        self.policy = DecisionPolicy(spec.decisions)
        self.copy_fields = list(spec.copy_fields)
        width = self.extractor.width + isinstance(runner, SegmentedRunner)  # the route column
        self._probe = np.zeros((1, width), dtype=np.float32)
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
        if self.state is not None and keep:  # before routing, which drops rows and adds a column
            self._stateful(messages, events, rows, keep, matrix, paths)
        if self._segmented is not None:
            values = gather(valid_events, self._segmented.field, paths)
            if len(keep) != len(rows):
                values = [v for v, ok in zip(values, extraction.valid.tolist(), strict=True) if ok]
            matrix, keep = self._route(self._segmented, matrix, keep, values, rejections)

        started = time.perf_counter()
        canary = self._canary_rows(messages, keep)
        scores, stages, failed = self._predict_all(matrix, canary)
        inference = time.perf_counter() - started
        finite = np.isfinite(scores)
        if failed or not finite.all():
            for pos in np.flatnonzero(~finite).tolist():
                detail = failed.get(pos, "model returned a non-finite score")
                rejections.append(Rejection(keep[pos], Reason.MODEL_ERROR, detail))
            keep = [row for row, ok in zip(keep, finite.tolist(), strict=True) if ok]
            scores, stages, matrix = scores[finite], stages[finite], matrix[finite]
            canary = None if canary is None else canary[finite]
        decisions = self.policy.indices(scores)
        position = {row: i for i, row in enumerate(rows)}
        copied = [(name, gather(valid_events, name, paths)) for name in self.copy_fields]
        now = int(time.time() * 1000)
        outputs = self._render(messages, keep, [position[row] for row in keep], copied, scores, decisions, stages,
                               canary, now)
        shadow = self._shadow(messages, keep, matrix, scores, decisions, now)
        rejections.sort(key=lambda r: r.index)
        features = matrix[:, :self.extractor.width]  # without a segment route column
        return ScoredBatch(keep, outputs, scores, decisions, rejections, inference, features, shadow,
                           0 if canary is None else int(canary.sum()))

    def score_matrix(self, matrix: np.ndarray) -> MatrixScores:
        """Score feature rows given as a matrix (a tensor request): the same model call, bisection
        and decisions as ``score``, without decoding; raises ModelUnavailable like ``score``."""
        if not matrix.shape[0]:
            return MatrixScores(np.zeros(0, np.float32), np.zeros(0, np.intp), {})
        scores, _, failed = self._predict(np.ascontiguousarray(matrix, dtype=np.float32))
        bad = np.flatnonzero(~np.isfinite(scores)).tolist()
        failed = {row: failed.get(row, "model returned a non-finite score") for row in bad}
        return MatrixScores(scores, self.policy.indices(scores), failed)

    def _canary_rows(self, messages: Sequence[SourceMessage], keep: list[int]) -> np.ndarray | None:
        """Which kept rows the canary takes (None: no canary, or it takes none)."""
        if self.challengers.canary is None or not keep:
            return None
        rows = canary_rows([messages[row].key() for row in keep], self.challengers.share)
        return rows if rows.any() else None

    def _predict_all(self, matrix: np.ndarray, canary: np.ndarray | None
                     ) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        """The champion's scores, and the canary's for the rows it takes."""
        if not matrix.shape[0]:
            return np.zeros(0, np.float32), np.zeros(0, np.intp), {}
        if canary is None:
            return self._predict(matrix)
        assert self.challengers.canary is not None
        scores = np.empty(matrix.shape[0], dtype=np.float32)
        stages = np.zeros(matrix.shape[0], dtype=np.intp)
        failed: dict[int, str] = {}
        for rows, challenger in ((np.flatnonzero(~canary), None), (np.flatnonzero(canary), self.challengers.canary)):
            if not len(rows):
                continue
            part = matrix[rows] if challenger is None else challenger.input(matrix[rows])
            got, got_stages, got_failed = self._predict(part, None if challenger is None else challenger.runner)
            scores[rows], stages[rows] = got, got_stages
            failed.update({int(rows[i]): err for i, err in got_failed.items()})
        return scores, stages, failed

    def _render(self, messages: Sequence[SourceMessage], keep: list[int], positions: list[int],
                copied: list[tuple[str, list[Any]]], scores: np.ndarray, decisions: np.ndarray, stages: np.ndarray,
                canary: np.ndarray | None, now: int) -> list[bytes]:
        """Score records, each naming the model (champion or canary) that scored it."""
        labels, champion = self.policy.labels, (self.runner.name, self.runner.version)
        if canary is None:
            return score_records(messages, positions, keep, copied, scores, decisions, labels, champion, now,
                                 self._graph(stages))
        assert self.challengers.canary is not None
        challenger = self.challengers.canary.runner
        out: list[bytes] = [b""] * len(keep)
        for mask, model, graph in ((~canary, champion, True), (canary, (challenger.name, challenger.version), False)):
            idx = np.flatnonzero(mask)
            records = score_records(messages, [positions[i] for i in idx], [keep[i] for i in idx], copied,
                                    scores[idx], decisions[idx], labels, model, now,
                                    self._graph(stages[idx]) if graph else None)
            for i, record in zip(idx.tolist(), records, strict=True):
                out[i] = record
        return out

    def _shadow(self, messages: Sequence[SourceMessage], keep: list[int], matrix: np.ndarray, scores: np.ndarray,
                decisions: np.ndarray, now: int) -> ShadowBatch | None:
        """The shadow's records and agreement; a shadow that fails records null scores, never more."""
        shadow = self.challengers.shadow
        if shadow is None:
            return None
        try:
            got = np.asarray(shadow.runner.predict(shadow.input(matrix)), dtype=np.float32) if keep else scores
        except Exception as exc:  # noqa: BLE001 - a failing shadow must not touch the champion's work
            log.warning("shadow model %s failed on a batch of %d: %s", shadow.runner.name, len(keep),
                        f"{type(exc).__name__}: {str(exc)[:200]}")
            got = np.full(len(keep), np.nan, dtype=np.float32)
        ok = np.isfinite(got)
        labels = self.policy.indices(np.where(ok, got, 0))
        outputs = shadow_records(messages, keep, got, labels, self.policy.labels,
                                 (shadow.runner.name, shadow.runner.version), (scores, decisions), now)
        return ShadowBatch(outputs, int(ok.sum()), int((labels[ok] == decisions[ok]).sum()),
                           float(np.abs(got[ok].astype(np.float64) - scores[ok]).sum()))

    @staticmethod
    def _route(runner: SegmentedRunner, matrix: np.ndarray, keep: list[int], values: list[Any],
               rejections: list[Rejection]) -> tuple[np.ndarray, list[int]]:
        """Each kept row's route index (``values``: its segment value) appended as the matrix's
        last column; rows no model takes are rejected (``no_model``)."""
        routes = runner.route(values)
        routed = routes >= 0
        if not routed.all():
            for row in np.flatnonzero(~routed).tolist():
                value = values[row]
                shown = "no value" if value is MISSING or type(value) is NotAnObject else f"{value!r}"
                rejections.append(Rejection(keep[row], Reason.NO_MODEL,
                                            f"{runner.field}: no model for segment {shown} and no default"))
            keep = [k for k, ok in zip(keep, routed.tolist(), strict=True) if ok]
            matrix, routes = matrix[routed], routes[routed]
        return np.hstack([matrix, routes[:, None].astype(np.float32)]), keep

    def swap(self, runner: ModelRunner, challengers: Challengers | None = None) -> ModelRunner:
        """Score with ``runner`` (and ``challengers``, when given) from the next batch on (call it
        between batches); returns the old runner."""
        old, self.runner = self.runner, runner
        if challengers is not None:
            self.challengers = challengers
        self._use(runner)
        self._probe = np.zeros_like(self._probe)
        return old

    def _use(self, runner: ModelRunner) -> None:
        """The runner's kind, looked up once: an isinstance check against a runtime-checkable
        protocol walks its members (a profile at 2,000 events/s found two per batch costing 3% of
        the loop)."""
        self._call = staged_call(runner)
        self._staged = runner if isinstance(runner, StagedRunner) else None
        self._segmented = runner if isinstance(runner, SegmentedRunner) else None

    def _stateful(self, messages: Sequence[SourceMessage], events: Sequence[Any], rows: list[int], keep: list[int],
                  matrix: np.ndarray, paths: dict[str, list[Any]]) -> None:
        """Fill the stateful features' columns from the engine's state; a copy field that names one
        copies its value (``paths`` is indexed like ``rows``)."""
        assert self.state is not None
        columns = self.state.compute([messages[row] for row in keep], [events[row] for row in keep])
        position = {row: i for i, row in enumerate(rows)}
        for name, values in columns.items():
            matrix[:, self.extractor.offsets[name]] = values
            if name in self.copy_fields:
                copied = [MISSING] * len(rows)
                for row, value in zip(keep, values.tolist(), strict=True):
                    copied[position[row]] = value
                paths[name] = copied

    def dead_letter(self, msg: SourceMessage, rejection: Rejection, headers: Headers) -> DeadLetter:
        """The dead-letter record of a rejected message; ``headers`` as the engine could read them."""
        return dead_letter(msg, rejection, headers, self.spec.max_bytes, int(time.time() * 1000))

    def probe(self, runner: ModelRunner | None = None) -> None:
        """Score a row the model scored before; raises ModelUnavailable if that fails now."""
        runner = runner or self.runner
        probe = self._probe if runner is self.runner else self._challenger_probe(runner)
        try:
            runner.predict(probe)
        except Exception as exc:  # any failure on a known-good row is the model's
            raise ModelUnavailable(f"model {runner.name} fails on a row it scored before: "
                                   f"{type(exc).__name__}: {str(exc)[:200]}") from exc

    def _challenger_probe(self, runner: ModelRunner) -> np.ndarray:
        canary = self.challengers.canary
        width = canary.input_width if canary is not None and canary.runner is runner else self.extractor.width
        return np.zeros((1, width), dtype=np.float32)

    def _graph(self, stages: np.ndarray) -> tuple[Sequence[Stage], np.ndarray] | None:
        """For a graph of models: its stages and the deciding stage of each scored row."""
        return None if self._staged is None else (self._staged.stages, stages)

    def _predict(self, matrix: np.ndarray, runner: ModelRunner | None = None
                 ) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        """The model's scores, bisecting to the failing rows when it raises; but when a row it has
        scored before fails too, the model is failing, not the rows: ModelUnavailable. ``runner``:
        a challenger instead of the champion."""
        champion = runner is None or runner is self.runner
        runner = self.runner if runner is None else runner
        call = self._call if champion else staged_call(runner)
        try:
            scores, stages = call(matrix)
        except ModelUnavailable:
            raise
        except MemoryError as exc:
            raise ModelUnavailable(f"model {runner.name}: out of memory") from exc
        except Exception as exc:  # noqa: BLE001 - the probe tells the model's failure from the rows'
            self.probe(runner)
            return bisect(call, matrix, exc)  # the whole batch failed once: start with its halves
        if champion and np.isfinite(scores[:1]).all():
            self._probe = matrix[:1].copy()
        return scores, stages, {}
