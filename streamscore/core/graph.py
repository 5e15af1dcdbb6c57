"""How models combine: an ensemble, a confidence-gated cascade or a chain, as one runner.

``ModelGraph`` answers the call the scorer makes of a model (``predict``: a float32 feature matrix
in, one score per row out) and ``predict_staged``, which also says which stage decided each row.
It owns nothing but arrays: its models are built through a ``build(name, width)`` callable
(the service's runner registry) when it loads, because a chained stage's input width is known only
once the stage before it has loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from streamscore.config import CascadeGraph, ChainGraph, DecisionSettings, EnsembleGraph
from streamscore.core.decisions import DecisionPolicy
from streamscore.core.model import ModelRunner, Stage
from streamscore.errors import ModelError

Build = Callable[[str, int], ModelRunner]
"""(model name, input width) -> an unloaded runner."""
Count = Callable[[str, int], None]
"""(stage name, rows) -> None: called once per model call with the rows it scored."""


@runtime_checkable
class ColumnsRunner(Protocol):
    """A runner that can also return its whole score output (for chains)."""

    def predict_columns(self, matrix: np.ndarray) -> np.ndarray:
        """float32 matrix [rows, features] -> float32 [rows, outputs]."""
        ...


def rekey(exc: ModelError, name: str, note: str = "") -> ModelError:
    """A runner's error, with its key (``model.X`` or ``features``) moved under ``models.NAME``."""
    text = str(exc)
    for prefix in ("model.", "features:"):
        if text.startswith(prefix):
            text = f"models.{name}.{text.removeprefix('model.')}"
            break
    return ModelError(text + note)


class ModelGraph:
    """The models of a ``graph`` section behind the ``ModelRunner`` call."""

    def __init__(self, graph: EnsembleGraph | CascadeGraph | ChainGraph, columns: Mapping[str, list[int] | None],
                 width: int, build: Build, decisions: DecisionSettings, count: Count | None = None) -> None:
        self.graph = graph
        self.columns = {name: None if cols is None else np.asarray(cols, dtype=np.intp)
                        for name, cols in columns.items()}
        self.width = width
        self.build = build
        self.policy = DecisionPolicy(decisions)
        self.count = count
        self.name = f"{graph.type}:{'+'.join(graph.names)}"
        self.version = ""
        self.provider = ""
        self.runners: dict[str, ModelRunner] = {}
        self.stages: list[Stage] = []

    # --- loading --------------------------------------------------------------------------------

    def _input_width(self, name: str) -> int:
        cols = self.columns[name]
        return self.width if cols is None else len(cols)

    def _load(self, name: str, width: int, note: str = "") -> ModelRunner:
        runner = self.build(name, width)
        try:
            runner.load()
        except ModelError as exc:
            raise rekey(exc, name, note) from exc
        self.runners[name] = runner
        return runner

    def load(self) -> None:
        """Build and load every model in graph order, checking widths; raises ModelError naming the key."""
        g = self.graph
        if isinstance(g, ChainGraph):
            extra = 0
            for i, name in enumerate(g.stages):
                note = f" (its features plus {extra} output columns of {g.stages[i - 1]!r})" if i else ""
                runner = self._load(name, self._input_width(name) + extra, note)
                if i < len(g.stages) - 1:
                    extra = self._columns(runner, np.zeros((1, self._input_width(name) + extra), np.float32)).shape[1]
        else:
            for name in (g.members if isinstance(g, EnsembleGraph) else g.stages):
                self._load(name, self._input_width(name))
            if isinstance(g, EnsembleGraph) and g.meta is not None:
                self._load(g.meta, len(g.members), f" (a stacking meta model reads one score per member: "
                                                    f"{len(g.members)} columns)")
        versions = {name: r.version for name, r in self.runners.items()}
        self.version = ",".join(f"{name}={v}" for name, v in versions.items())
        self.provider = ",".join(sorted({r.provider for r in self.runners.values()}))
        self.stages = self._stages(versions)

    def _stages(self, versions: dict[str, str]) -> list[Stage]:
        g = self.graph
        if isinstance(g, EnsembleGraph):
            return [Stage(g.meta or "ensemble", versions)]
        if isinstance(g, CascadeGraph):
            first, second = g.stages
            return [Stage(first, {first: versions[first]}), Stage(second, versions)]
        return [Stage(g.stages[-1], versions)]

    def close(self) -> None:
        for runner in self.runners.values():
            runner.close()

    # --- scoring --------------------------------------------------------------------------------

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return self.predict_staged(matrix)[0]

    def predict_staged(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores [rows] and the index into ``stages`` of the stage that decided each row."""
        g = self.graph
        if isinstance(g, EnsembleGraph):
            return self._ensemble(g, matrix), np.zeros(matrix.shape[0], dtype=np.intp)
        if isinstance(g, CascadeGraph):
            return self._cascade(g, matrix)
        return self._chain(g, matrix), np.zeros(matrix.shape[0], dtype=np.intp)

    def _input(self, name: str, matrix: np.ndarray) -> np.ndarray:
        cols = self.columns[name]
        return matrix if cols is None else matrix[:, cols]

    def _call(self, name: str, matrix: np.ndarray) -> np.ndarray:
        if self.count is not None:
            self.count(name, matrix.shape[0])
        return np.asarray(self.runners[name].predict(matrix), dtype=np.float32)

    def _columns(self, runner: ModelRunner, matrix: np.ndarray) -> np.ndarray:
        if isinstance(runner, ColumnsRunner):
            out = np.asarray(runner.predict_columns(matrix), dtype=np.float32)
            return out.reshape(matrix.shape[0], -1)
        return np.asarray(runner.predict(matrix), dtype=np.float32).reshape(-1, 1)

    def _ensemble(self, g: EnsembleGraph, matrix: np.ndarray) -> np.ndarray:
        scores = np.stack([self._call(name, self._input(name, matrix)) for name in g.members], axis=1)
        if g.combine == "mean":
            combined = scores.mean(axis=1, dtype=np.float64)
        elif g.combine == "weighted_mean":
            w = np.asarray(g.weights, dtype=np.float64)
            combined = scores.astype(np.float64) @ w / w.sum()
        elif g.combine == "max":
            combined = scores.max(axis=1)
        elif g.combine == "min":
            combined = scores.min(axis=1)
        elif g.combine == "vote":
            combined = vote(scores, self.policy)
        else:
            assert g.meta is not None
            combined = self._call(g.meta, np.ascontiguousarray(scores))
        return np.asarray(combined, dtype=np.float32)

    def _cascade(self, g: CascadeGraph, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        first, second = g.stages
        scores = self._call(first, self._input(first, matrix))
        lo, hi = g.band
        gated = (scores >= lo) & (scores <= hi)
        if gated.any():
            scores = scores.copy()
            scores[gated] = self._call(second, self._input(second, matrix[gated]))
        return scores, gated.astype(np.intp)

    def _chain(self, g: ChainGraph, matrix: np.ndarray) -> np.ndarray:
        carried = np.zeros((matrix.shape[0], 0), dtype=np.float32)
        for name in g.stages[:-1]:
            x = np.hstack([self._input(name, matrix), carried])
            if self.count is not None:
                self.count(name, x.shape[0])
            carried = self._columns(self.runners[name], x)
        last = g.stages[-1]
        return self._call(last, np.hstack([self._input(last, matrix), carried]))


def vote(scores: np.ndarray, policy: DecisionPolicy) -> np.ndarray:
    """Majority of the members' decision labels per row (a tie goes to the later, stricter label);
    the score is the mean score of the members that voted for the winner, which lies in the winner's
    band, so the policy turns it back into the voted label."""
    labels = policy.indices(scores.ravel()).reshape(scores.shape)
    n = len(policy.labels)
    counts = (labels[:, :, None] == np.arange(n)).sum(axis=1)
    winner = n - 1 - np.argmax(counts[:, ::-1], axis=1)
    voters = labels == winner[:, None]
    with np.errstate(invalid="ignore"):
        mean: np.ndarray = np.where(voters, scores, 0).sum(axis=1, dtype=np.float64) / voters.sum(axis=1)
    return mean.astype(np.float32)

