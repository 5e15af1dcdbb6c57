"""The scoring core under PySpark's ``mapInArrow`` in local mode: the demo model over a Parquet data
set gives the same scores and rejections as ``streamscore batch`` in one process."""

from __future__ import annotations

import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from load.batch_data import events, write
from streamscore.batch.arrow import SPARK_SCHEMA, ArrowScorer
from streamscore.batch.run import BatchRun
from streamscore.config import load_settings
from tests.support.batch import batch_config, read_output

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="PySpark needs Java (17) on the PATH")


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    from pyspark.sql import SparkSession

    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYSPARK_PYTHON", sys.executable)  # the executors' Python is this one, with streamscore
        env.setenv("PYSPARK_DRIVER_PYTHON", sys.executable)
        session = (SparkSession.builder.master("local[2]").appName("streamscore-test")
                   .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
                   .config("spark.driver.memory", "512m").getOrCreate())
        try:
            yield session
        finally:
            session.stop()


@pytest.mark.timeout(600)
def test_spark_map_in_arrow_matches_the_single_process_scores(tmp_path: Path, spark: object) -> None:
    rows = 3000
    data = tmp_path / "data"
    data.mkdir()
    values = events(rows, seed=71)
    write(data / "a.parquet", values[:1800], null_every=100)
    write(data / "b.parquet", values[1800:], null_every=100)
    out = tmp_path / "out"
    config = batch_config(tmp_path, {"input": {"files": [str(data / "*.parquet")]}, "output": str(out),
                                     "chunk_rows": 1000, "batch_rows": 500})
    settings = load_settings(config)
    BatchRun(settings, progress=False).run(threading.Event())
    scores, rejects = read_output(out)
    single = {r["transaction_id"]: (r["score"], r["decision"]) for r in scores}

    frame = spark.read.parquet(str(data)).repartition(3)  # type: ignore[attr-defined]
    result = frame.mapInArrow(ArrowScorer(settings), SPARK_SCHEMA).collect()
    assert len(result) == rows
    scored = [r for r in result if r["record"] is not None]
    spark_scores = {}
    for r in scored:
        record = orjson.loads(r["record"])
        assert (record["score"], record["decision"]) == (pytest.approx(r["score"], rel=1e-6), r["decision"])
        spark_scores[record["transaction_id"]] = (record["score"], record["decision"])
    assert len(single) == len(scores) == rows - 30, "every 100th row has a null amount"
    assert spark_scores == single
    assert sorted(r["reason"] for r in result if r["record"] is None) == sorted(r["reason"] for r in rejects)
    assert len(rejects) == 30
