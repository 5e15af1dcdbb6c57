"""``streamscore batch`` throughput and memory: synthetic transactions in a file, scored to a folder
or into a PostgreSQL table (a server started for the run); or in a Kafka topic, scored as a topic
range into a score topic (an Apache Kafka broker started for the run, ``scripts/kafka.sh``).

    python -m load.batch --rows 5000000 --format parquet                 # rows/s and peak RSS
    python -m load.batch --rows 1000000 --format jsonl --to postgres      # the postgresql destination
    python -m load.batch --rows 200000 --files 4 --workers 1,2            # --workers N, one after another
    python -m load.batch --rows 200000 --to kafka --delivery at_least_once,exactly_once   # what transactions cost

With ``--to kafka`` the rows are produced once to a 4-partition topic, and each run writes to score
and dead-letter topics of its own, counted afterwards with a ``read_committed`` reader.

The input file is generated once per (rows, format) under ``--workdir`` and reused; a Parquet file
repeats one block of 200,000 generated rows (the cost per row does not depend on repeats). The run is
``streamscore batch`` as its own process, timed from start to exit (model load included); its peak
RSS is the kernel's high-water mark of that process. Every output row is counted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psycopg
import yaml

from load.batch_data import events, write
from load.brokers import KafkaBroker, make_broker
from load.faults.harness import Topics, make_topics
from load.kafka_io import OutputReader, Record, produce_one
from load.postgres import PostgresServer, binaries
from streamscore.engines.kafka_admin import create_topics

GENERATE_CHUNK = 200_000


def input_file(workdir: Path, rows: int, fmt: str) -> Path:
    """``rows`` transactions (no malformed ones: tables cannot hold them) as ``fmt``, made once."""
    path = workdir / f"transactions-{rows}.{fmt}"
    if path.exists():
        return path
    if fmt == "parquet":  # one generated block written again and again, in row groups
        import orjson
        import pyarrow as pa
        import pyarrow.parquet as pq

        block = pa.Table.from_pylist([orjson.loads(v) for v in events(min(GENERATE_CHUNK, rows), seed=0)])
        with pq.ParquetWriter(str(path) + ".tmp", block.schema) as writer:
            for start in range(0, rows, GENERATE_CHUNK):
                writer.write_table(block.slice(0, min(GENERATE_CHUNK, rows - start)))
        os.replace(str(path) + ".tmp", path)
        return path
    parts = [write(workdir / f".part-{i}.{fmt}", events(min(GENERATE_CHUNK, rows - s), seed=s))
             for i, s in enumerate(range(0, rows, GENERATE_CHUNK))]
    with open(str(path) + ".tmp", "wb") as out:
        for i, part in enumerate(parts):
            data = part.read_bytes()
            if fmt == "csv" and i:
                data = data.split(b"\n", 1)[1]  # one header
            out.write(data)
            part.unlink()
    os.replace(str(path) + ".tmp", path)
    return path


def copies(workdir: Path, source: Path, files: int) -> list[Path]:
    """``source`` as ``files`` files (hard links where possible): the parts ``--workers`` shares out."""
    if files == 1:
        return [source]
    paths = []
    for i in range(files):
        path = workdir / f"copy-{i}-{source.name}"
        path.unlink(missing_ok=True)
        try:
            os.link(source, path)
        except OSError:
            shutil.copyfile(source, path)
        paths.append(path)
    return paths


def topic_input(workdir: Path, rows: int) -> tuple[KafkaBroker, Topics]:
    """A started Apache Kafka broker and a 4-partition topic holding ``rows`` generated transactions."""
    broker = make_broker(workdir / "broker", "kafka")
    assert isinstance(broker, KafkaBroker)
    broker.start()
    t = make_topics(broker.bootstrap_servers, 4, prefix="batch")
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 20, "compression.type": "lz4"})
    for start in range(0, rows, GENERATE_CHUNK):
        for value in events(min(GENERATE_CHUNK, rows - start), seed=start):
            produce_one(producer, t.source, value)
        producer.poll(0)
    if producer.flush(120):
        raise SystemExit("the input was not all acknowledged within 120 s")
    return broker, t


def run_topics(bootstrap: str, t: Topics, run: str) -> Topics:
    """Score and dead-letter topics of this run's own (the input topic and group are shared)."""
    out = Topics(t.source, f"{t.destination}-{run}", f"{t.dead_letter}-{run}", t.group, t.partitions)
    create_topics(bootstrap, {out.destination: t.partitions, out.dead_letter: 1})
    return out


def source_of(record: Record) -> tuple[int, int]:
    """(partition, offset) of the input a score record or dead letter comes from."""
    if "streamscore.source.offset" in record.headers:
        return int(record.headers["streamscore.source.partition"]), int(record.headers["streamscore.source.offset"])
    source = orjson.loads(record.value or b"")["source"]
    return int(source["partition"]), int(source["offset"])


def config(workdir: Path, sources: list[Path], to: str, dsn: str | None, chunk_rows: int, workers: int,
           kafka: tuple[str, Topics, str] | None = None) -> Path:
    demo = Path(__file__).resolve().parents[1] / "streamscore" / "demo"
    settings = yaml.safe_load((demo / "config.yaml").read_text())
    settings["model"].update(path=str(demo / "fraud_model.onnx"), provider="cpu")
    out = workdir / "out"
    shutil.rmtree(out, ignore_errors=True)
    settings["batch"] = {"input": {"files": [str(s) for s in sources]}, "chunk_rows": chunk_rows, "workers": workers}
    if kafka is not None:
        bootstrap, t, delivery = kafka
        settings["kafka"].update(bootstrap_servers=bootstrap, group_id=t.group, source_topics=[t.source],
                                 destination_topic=t.destination, dead_letter_topic=t.dead_letter)
        settings["delivery"] = delivery
        settings["batch"]["input"] = {"kafka": {}}
        settings["batch"]["state"] = str(out / "_streamscore")
    elif to == "postgres":
        settings["batch"]["state"] = str(out / "_streamscore")
        settings["batch"]["rejects"] = str(out / "rejects")  # no broker needed
        settings["destinations"] = [{"kind": "postgresql", "options": {"dsn": dsn, "table": "bench_scores"}}]
    else:
        settings["batch"]["output"] = str(out)
    path = workdir / "batch.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def measure(path: Path, args: argparse.Namespace, workers: int, dsn: str | None,
            kafka: tuple[str, Topics, str] | None = None) -> dict[str, object]:
    rows = args.rows * args.files
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "streamscore", "batch", "-c", str(path), "--progress", "log"],
                          capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    # the largest process waited for so far (with workers: a worker, which its parent waited for)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if done.returncode != 0:
        raise SystemExit(f"streamscore batch failed:\n{done.stderr[-3000:]}")
    rows_out = None
    if dsn is not None:
        with psycopg.connect(dsn) as conn:
            rows_out = conn.execute("SELECT count(*) FROM bench_scores").fetchone()[0]  # type: ignore[index]
    extra: dict[str, object] = {}
    if kafka is not None:  # read_committed (librdkafka's default): what a downstream reader sees
        bootstrap, t, delivery = kafka
        with OutputReader(bootstrap, [t.destination, t.dead_letter]) as reader:
            read = reader.read_to_end(600)
        extra = {"delivery": delivery, "records_read_back": len(read),
                 "distinct_inputs": len(set(map(source_of, read)))}
    return {**extra, "rows": rows, "files": args.files, "workers": workers,
            "format": "kafka" if kafka else args.format, "to": args.to,
            "seconds": round(seconds, 1), "rows_per_s": round(rows / seconds), "peak_rss_mb": round(peak_mb),
            "summary": done.stdout.strip(), "table_rows": rows_out, "cpus": os.cpu_count(),
            "load_1m": round(os.getloadavg()[0], 1), "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--format", choices=["parquet", "jsonl", "csv"], default="parquet")
    parser.add_argument("--to", choices=["folder", "postgres", "kafka"], default="folder",
                        help="kafka: the rows in a topic, scored as a topic range into a score topic")
    parser.add_argument("--delivery", default="at_least_once",
                        help="--to kafka: comma-separated delivery modes, run one after another")
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--files", type=int, default=1, help="score FILES copies of the --rows file (rows x FILES)")
    parser.add_argument("--workers", default="1", help="comma-separated worker counts, run one after another")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/streamscore-batch-bench"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.to == "kafka":
        kafka_runs(args)
        return
    started = time.monotonic()
    source = input_file(args.workdir, args.rows, args.format)
    sources = copies(args.workdir, source, args.files)
    print(f"input: {source} ({source.stat().st_size / 1e6:.0f} MB, made or found in "
          f"{time.monotonic() - started:.0f}s)", flush=True)
    server = None
    if args.to == "postgres":
        bin_dir = binaries()
        if bin_dir is None:
            raise SystemExit("PostgreSQL is not installed")
        server = PostgresServer(bin_dir).init().start()
    try:
        for workers in [int(w) for w in args.workers.split(",")]:
            if server is not None:
                with psycopg.connect(server.dsn, autocommit=True) as conn:
                    conn.execute("DROP TABLE IF EXISTS bench_scores")
            path = config(args.workdir, sources, args.to, server.dsn if server else None, args.chunk_rows, workers)
            print(json.dumps(measure(path, args, workers, server.dsn if server else None), indent=2), flush=True)
    finally:
        if server is not None:
            server.remove()


def kafka_runs(args: argparse.Namespace) -> None:
    started = time.monotonic()
    broker, t = topic_input(args.workdir, args.rows)
    print(f"input: {args.rows} rows in {t.source} (4 partitions), produced in {time.monotonic() - started:.0f}s",
          flush=True)
    try:
        runs = [(d, int(w)) for d in args.delivery.split(",") for w in args.workers.split(",")]
        for n, (delivery, workers) in enumerate(runs):
            kafka = (broker.bootstrap_servers, run_topics(broker.bootstrap_servers, t, f"{n}"), delivery)
            path = config(args.workdir, [], "kafka", None, args.chunk_rows, workers, kafka)
            print(json.dumps(measure(path, args, workers, None, kafka), indent=2), flush=True)
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
