"""Score a Parquet data set with Spark: streamscore's scoring core under ``mapInArrow``.

    pip install 'streamscore[spark]'     # and Java 17
    python examples/spark_score.py -c config.yaml --input 'data/*.parquet' --output scores/ [--master local[4]]

Every executor loads the configured model once per task and scores its rows with the same ``Scorer``
as ``streamscore batch`` (the config's ``batch`` section is optional here; its ``batch_rows`` is the
model's batch). The output is Parquet: one row per input row, scored (``score``, ``decision``,
``record``: the stream's score record) or rejected (``reason``, ``detail``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pyspark.sql import SparkSession

from streamscore.batch.arrow import SPARK_SCHEMA, ArrowScorer
from streamscore.config import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", type=Path, required=True)
    parser.add_argument("--input", required=True, help="Parquet file(s), folder or glob Spark can read")
    parser.add_argument("--output", required=True, help="output folder (Parquet)")
    parser.add_argument("--master", default=None, help="Spark master (default: spark-submit's, or local[*])")
    args = parser.parse_args()
    builder = SparkSession.builder.appName("streamscore")
    if args.master:
        builder = builder.master(args.master)
    spark = builder.getOrCreate()
    scorer = ArrowScorer(load_settings(args.config), source=args.input)
    scores = spark.read.parquet(args.input).mapInArrow(scorer, SPARK_SCHEMA)
    scores.write.mode("overwrite").parquet(args.output)
    counts = {row["decision"] or f"rejected: {row['reason']}": row["count"]
              for row in spark.read.parquet(args.output).groupBy("decision", "reason").count().collect()}
    print(f"scored {args.input} -> {args.output}: {counts}")
    spark.stop()


if __name__ == "__main__":
    main()
