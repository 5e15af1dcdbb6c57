"""Many models, one per segment: each row goes to the model of its event's segment value.

The scorer reads the segment value of each event (``SegmentedRunner.route``) and appends the route
index to the feature matrix as its last column; ``SegmentRouter.predict_staged`` splits the batch
by that column and scores each part in one call to its model. A row carrying its own route keeps
bisection (which slices the matrix) correct without any side channel. At most ``max_loaded``
models stay loaded: the least recently used is closed and loaded again when its segment returns.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np

from streamscore.config import SegmentGraph
from streamscore.core.graph import Build, Count, rekey
from streamscore.core.model import ModelRunner, Stage
from streamscore.errors import ModelError

log = logging.getLogger(__name__)


def segment_key(value: object) -> str | None:
    """The text a segment value is matched by: a string as is, an integer in decimal, a boolean
    as ``true``/``false``; anything else (absent, null, float, object) has no segment."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int):
        return str(value)
    return None


class SegmentRouter:
    """The models of a ``segments`` graph behind the ``ModelRunner`` call."""

    def __init__(self, graph: SegmentGraph, columns: Mapping[str, list[int] | None], width: int, build: Build,
                 count: Count | None = None) -> None:
        self.graph = graph
        self.field = graph.field
        self.targets = graph.names
        """Distinct models, in route order then the default: a route index points in here."""
        index = {name: i for i, name in enumerate(self.targets)}
        self._routes = {value: index[name] for value, name in graph.routes.items()}
        self._default = index[graph.default] if graph.default is not None else -1
        self.columns = {name: None if cols is None else np.asarray(cols, dtype=np.intp)
                        for name, cols in columns.items()}
        self.width = width
        self.build = build
        self.count = count
        self.max_loaded = graph.max_loaded or len(self.targets)
        self.name = f"segments:{graph.field}"
        self.version = ""
        self.provider = ""
        self.runners: OrderedDict[str, ModelRunner] = OrderedDict()
        """The loaded models, least recently used first."""
        self.versions: dict[str, str] = {}
        self.stages: list[Stage] = []
        self.loads = 0
        """Model loads so far (the first load of each at start included): reloads show LRU churn."""

    def _width(self, name: str) -> int:
        cols = self.columns[name]
        return self.width if cols is None else len(cols)

    def _load(self, name: str) -> ModelRunner:
        runner = self.build(name, self._width(name))
        try:
            runner.load()
        except ModelError as exc:
            raise rekey(exc, name) from exc
        self.loads += 1
        self.runners[name] = runner
        while len(self.runners) > self.max_loaded:
            evicted, old = self.runners.popitem(last=False)
            old.close()
            log.info("segment model %s unloaded (at most %d loaded)", evicted, self.max_loaded)
        return runner

    def load(self) -> None:
        """Load and check every model once (so ``validate`` sees them all); keep the last ``max_loaded``."""
        for name in self.targets:
            runner = self._load(name)
            self.versions[name] = runner.version
            self.provider = runner.provider
        self.version = ",".join(f"{name}={v}" for name, v in self.versions.items())
        self.stages = [Stage(name, {name: self.versions[name]}) for name in self.targets]

    def close(self) -> None:
        for runner in self.runners.values():
            runner.close()
        self.runners.clear()

    def route(self, values: Sequence[object]) -> np.ndarray:
        routes, default = self._routes, self._default
        return np.fromiter((routes.get(k, default) if (k := segment_key(v)) is not None else default
                            for v in values), dtype=np.intp, count=len(values))

    def runner(self, name: str) -> ModelRunner:
        """The loaded model, marked most recently used; loaded (evicting the oldest) if it is not."""
        runner = self.runners.get(name)
        if runner is None:
            return self._load(name)
        self.runners.move_to_end(name)
        return runner

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return self.predict_staged(matrix)[0]

    def predict_staged(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``matrix``'s last column is each row's route index; the stage of a row is its model."""
        routes = matrix[:, -1].astype(np.intp)
        features = matrix[:, :-1]
        scores = np.empty(matrix.shape[0], dtype=np.float32)
        for target in np.unique(routes).tolist():
            rows = np.flatnonzero(routes == target)
            name = self.targets[target]
            cols = self.columns[name]
            x = features[rows] if cols is None else features[np.ix_(rows, cols)]
            if self.count is not None:
                self.count(name, len(rows))
            scores[rows] = self.runner(name).predict(np.ascontiguousarray(x))
        return scores, routes
