"""``streamscore batch`` against a real broker: a topic range gives exactly its records and leaves the
live group alone; batch scores (from the topic, and from files of the same events) equal the stream's;
under exactly-once a run killed with kill -9 and restarted writes each input once to the topics."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from load.batch_data import write
from load.brokers import broker_kind
from load.kafka_io import Record
from streamscore.batch.run import BatchRun
from streamscore.config import load_settings
from streamscore.demo.transactions import TransactionGenerator
from tests.integration.test_exactly_once import HONOURS_READ_COMMITTED, NO_READ_COMMITTED
from tests.support import OutputReader, ServiceProcess, Topics, committed, metric, produce, stop_and_read, wait_for
from tests.support.batch import positions, read_output

pytestmark = pytest.mark.integration

FINDS_OFFSETS_BY_TIME = bool(os.environ.get("STREAMSCORE_TEST_BOOTSTRAP")) or broker_kind() == "kafka"
NO_OFFSETS_BY_TIME = ("the embedded broker answers every ListOffsets-by-time query with offset 0; run with "
                      "STREAMSCORE_TEST_BROKER=kafka to check ranges by time")


def run_batch(config: Path) -> str:
    return BatchRun(load_settings(config), progress=False).run(threading.Event()).line()


def test_a_topic_range_gives_exactly_its_records_and_joins_no_group_with_two_workers(
        bootstrap: str, topics: Callable[..., Topics], write_config: Callable[..., Path], tmp_path: Path) -> None:
    t = topics(2)
    pairs = TransactionGenerator(seed=40).encoded(120)
    for partition in (0, 1):
        produce(bootstrap, t.source, [(k, v, None) for k, v in pairs[partition::2]], partition=partition)
    out = tmp_path / "out"
    config = write_config(t, batch={"input": {"kafka": {"start_offset": 10, "end_offset": 45}},
                                    "output": str(out), "format": "jsonl", "chunk_rows": 10,
                                    "workers": 2})  # a partition each
    line = run_batch(config)
    scores, rejects = read_output(out)
    assert rejects == []
    assert sorted(positions(scores)) == [(t.source, p, o) for p in (0, 1) for o in range(10, 45)]
    assert line == "read 70 = scored 70 + rejected 0"
    assert all(offset < 0 for offset in committed(bootstrap, t.group, t.source, 2).values()), "no commit"
    assert all(offset < 0 for offset in committed(bootstrap, f"{t.group}-batch", t.source, 2).values())


@pytest.mark.skipif(not FINDS_OFFSETS_BY_TIME, reason=NO_OFFSETS_BY_TIME)
def test_a_topic_range_by_time(bootstrap: str, topics: Callable[..., Topics], write_config: Callable[..., Path],
                               tmp_path: Path) -> None:
    t = topics(2)
    before = int(time.time() * 1000) - 1
    produce(bootstrap, t.source, [(k, v, None) for k, v in TransactionGenerator(seed=42).encoded(40)])
    after = int(time.time() * 1000) + 1
    time.sleep(0.01)  # the next records are later than ``after``
    produce(bootstrap, t.source, [(k, v, None) for k, v in TransactionGenerator(seed=43).encoded(30)])
    first = {"start_timestamp_ms": before, "end_timestamp_ms": after}
    assert run_batch(write_config(t, batch={"input": {"kafka": first}, "output": str(tmp_path / "first")})) == \
        "read 40 = scored 40 + rejected 0"
    later = {"start_timestamp_ms": after}
    assert run_batch(write_config(t, batch={"input": {"kafka": later}, "output": str(tmp_path / "later")})) == \
        "read 30 = scored 30 + rejected 0"


@pytest.mark.skipif(not HONOURS_READ_COMMITTED, reason=NO_READ_COMMITTED)
def test_exactly_once_to_a_topic_a_run_killed_and_restarted_writes_each_input_once(
        bootstrap: str, topics: Callable[..., Topics], write_config: Callable[..., Path],
        output_reader: Callable[..., OutputReader], tmp_path: Path) -> None:
    t = topics(2)
    pairs = TransactionGenerator(seed=44, malformed_rate=0.05).encoded(3000)
    produce(bootstrap, t.source, [(k, v, None) for k, v in pairs])
    state = tmp_path / "state"
    config = write_config(t, delivery="exactly_once", batch={
        "input": {"kafka": {}}, "state": str(state), "chunk_rows": 50, "batch_rows": 50})
    command = [sys.executable, "-m", "streamscore", "batch", "-c", str(config), "--progress", "log"]

    def progress(stable: bool = True) -> int:
        """The inputs whose chunks' transactions committed: the run's progress group's positions."""
        plan = state / "plan.json"
        if not plan.exists():
            return 0
        group = f"{t.group}-batch-{orjson.loads(plan.read_bytes())['run']}"
        return sum(max(0, offset) for offset in committed(bootstrap, group, t.source, 2, stable).values())

    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: progress() >= 300, 90, "some chunks committed")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert progress(stable=False) < len(pairs), "killed in the middle"  # its open transaction is not stable
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert progress() == len(pairs)
    records = output_reader(t).read_to_end()  # read_committed: librdkafka's default isolation
    seen = collections.Counter(map(_source_position, records))
    assert len(seen) == len(pairs), "an input lost"
    assert max(seen.values()) == 1, "an input written twice"
    scored = sum(1 for r in records if r.topic == t.destination)
    assert f"read {len(pairs)} = scored {scored} + rejected {len(records) - scored}" in result.stdout
    assert "by an earlier run" in result.stdout


def _source_position(record: Record) -> tuple[int, int]:
    """(partition, offset) of the input a score record or a dead letter comes from."""
    if record.headers.get("streamscore.source.offset"):
        return int(record.headers["streamscore.source.partition"]), int(record.headers["streamscore.source.offset"])
    source = orjson.loads(record.value or b"")["source"]
    return source["partition"], source["offset"]


def test_batch_scores_equal_the_streams(
        bootstrap: str, topics: Callable[..., Topics], write_config: Callable[..., Path],
        service: Callable[..., ServiceProcess], output_reader: Callable[..., OutputReader], tmp_path: Path) -> None:
    t = topics(2)
    pairs = TransactionGenerator(seed=41, malformed_rate=0.05).encoded(600)
    produce(bootstrap, t.source, [(k, v, None) for k, v in pairs])
    proc = service(write_config(t))
    proc.wait_ready()

    def done() -> bool:
        text = proc.metrics()
        return (metric(text, "streamscore_events_consumed_total") >= len(pairs)
                and metric(text, "streamscore_uncommitted_events") == 0)
    wait_for(done, 90, "every input consumed and committed")
    records = stop_and_read(output_reader(t), proc)
    live = {}
    for r in records:
        if r.topic == t.destination:
            record = orjson.loads(r.value or b"")
            live[(record["source"]["partition"], record["source"]["offset"])] = record
    dead = {(int(r.headers["streamscore.source.partition"]), int(r.headers["streamscore.source.offset"])):
            r.headers["streamscore.reason"].decode() for r in records if r.topic == t.dead_letter}
    assert len(live) + len(dead) == len(pairs)

    # the same topic, as a batch range from its beginning to its end at start
    out = tmp_path / "from-topic"
    run_batch(write_config(t, batch={"input": {"kafka": {}}, "output": str(out), "chunk_rows": 200}))
    scores, rejects = read_output(out)
    assert {(r["source"]["partition"], r["source"]["offset"]): (r["score"], r["decision"]) for r in scores} == {
        k: (v["score"], v["decision"]) for k, v in live.items()}
    assert {(r["source"]["partition"], r["source"]["offset"]): r["reason"] for r in rejects} == dead

    # the same events in files of each format (the tables hold the JSON objects only)
    live_by_id = {v["transaction_id"]: (v["score"], v["decision"]) for v in live.values()}
    values = [v for _, v in pairs]
    objects = [orjson.dumps(orjson.loads(v)) for v in values if _is_scored(v, live_by_id)]
    files = [write(tmp_path / "events.jsonl", values), write(tmp_path / "events.csv", objects),
             write(tmp_path / "events.parquet", objects)]
    out = tmp_path / "from-files"
    run_batch(write_config(t, batch={"input": {"files": [str(f) for f in files]}, "output": str(out)}))
    scores, rejects = read_output(out)
    for suffix in (".jsonl", ".csv", ".parquet"):
        got = {r["transaction_id"]: (r["score"], r["decision"]) for r in scores
               if r["source"]["topic"].endswith(suffix)}
        assert got == live_by_id, suffix
    assert sorted(r["reason"] for r in rejects) == sorted(dead.values())


def _is_scored(value: bytes, live_by_id: dict[str, tuple[float, str]]) -> bool:
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return isinstance(event, dict) and event.get("transaction_id") in live_by_id
