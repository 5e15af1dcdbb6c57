"""The scoring core over Arrow record batches, for engines that hand a process batches of rows
(PySpark's ``DataFrame.mapInArrow``, Ray, Dask): ``ArrowScorer(settings)`` is the function.

Each row becomes the same JSON event bytes ``streamscore batch`` makes of a Parquet or CSV row, and
is scored by the same ``Scorer`` (decode, features, model graph, decisions, render) in steps of
``batch.batch_rows``, so the same configuration gives the same scores. One output row per input
row: a scored row has its ``score``, ``decision`` and ``record`` (the stream's score record); a
rejected one its ``reason`` and ``detail``. ``row`` counts the rows this call has seen (the record's
``source.offset``): a Spark task numbers its own partition's rows, so key results by the event's
own id, not by ``row``.

The object holds only the settings (it pickles to the executors); the model is loaded when a call
starts, in the process that runs it, and closed when its batches end.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa

from streamscore.batch.inputs import events_of
from streamscore.batch.run import BatchMessage
from streamscore.config import Settings
from streamscore.core.scorer import Scorer, ScoringSpec

SCHEMA = pa.schema([
    ("row", pa.int64()),
    ("score", pa.float64()),
    ("decision", pa.string()),
    ("record", pa.string()),
    ("reason", pa.string()),
    ("detail", pa.string()),
])
"""The output batches' schema."""
SPARK_SCHEMA = "row long, score double, decision string, record string, reason string, detail string"
"""``SCHEMA`` as the DDL string ``mapInArrow`` takes."""


class ArrowScorer:
    """``ArrowScorer(settings)(batches)``: the scores of each record batch, one batch out per batch in."""

    def __init__(self, settings: Settings, source: str = "arrow") -> None:
        self.settings = settings
        self.source = source
        """The record's ``source.topic`` (a file's path in ``streamscore batch``)."""

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from streamscore.plugins import Plugins
        from streamscore.service import build_runner

        runner = build_runner(self.settings, Plugins.default())
        runner.load()
        try:
            scorer = Scorer(ScoringSpec.from_settings(self.settings), runner)
            seen = 0
            for batch in batches:
                values = events_of(pa.Table.from_batches([batch]))()
                yield self._score(scorer, values, seen)
                seen += len(values)
        finally:
            runner.close()

    def _score(self, scorer: Scorer, values: list[bytes], first: int) -> pa.RecordBatch:
        n = len(values)
        score: list[float | None] = [None] * n
        decision: list[str | None] = [None] * n
        record: list[str | None] = [None] * n
        reason: list[str | None] = [None] * n
        detail: list[str | None] = [None] * n
        labels = scorer.policy.labels
        step = self.settings.batch.batch_rows if self.settings.batch is not None else 5_000
        for start in range(0, n, step):
            messages = [BatchMessage(self.source, 0, first + start + i, v)
                        for i, v in enumerate(values[start:start + step])]
            result = scorer.score(messages)
            for j, row in enumerate(result.scored):
                at = start + row
                score[at] = float(result.scores[j])
                decision[at] = labels[int(result.decisions[j])]
                record[at] = result.outputs[j].decode()
            for r in result.rejections:
                reason[start + r.index], detail[start + r.index] = str(r.reason), r.detail
        return pa.RecordBatch.from_arrays(
            [pa.array(range(first, first + n), pa.int64()), pa.array(score, pa.float64()), pa.array(decision),
             pa.array(record), pa.array(reason), pa.array(detail)], schema=SCHEMA)
