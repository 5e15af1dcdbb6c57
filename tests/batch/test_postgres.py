"""``streamscore batch`` into a real PostgreSQL table: chunks written again change nothing, and with a
rejects folder no Kafka broker is needed."""

from __future__ import annotations

import collections
import threading
import uuid
from pathlib import Path

import psycopg

from load.batch_data import events, write
from streamscore.batch.run import BatchRun
from streamscore.config import load_settings
from tests.support.batch import batch_config, positions, read_output
from tests.support.postgres import PostgresServer


def test_batch_into_postgres_writes_each_row_once_when_chunks_are_redone(postgres: PostgresServer,
                                                                          tmp_path: Path) -> None:
    table = f"batch_{uuid.uuid4().hex[:8]}"
    write(tmp_path / "in.jsonl", events(900, seed=9, malformed_rate=0.03))
    state = tmp_path / "state"
    config = batch_config(
        tmp_path, {"input": {"files": [str(tmp_path / "in.jsonl")]}, "state": str(state),
                   "rejects": str(tmp_path / "out" / "rejects"), "chunk_rows": 100},
        destinations=[{"kind": "postgresql", "options": {"dsn": postgres.dsn, "table": table}}])
    settings = load_settings(config, env={"STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"})  # no broker
    first = BatchRun(settings, progress=False).run(threading.Event())
    for marker in sorted((state / "done").iterdir())[::2]:
        marker.unlink()  # as if killed before these chunks were marked done: they are written again
    second = BatchRun(settings, progress=False).run(threading.Event())
    assert second.counts == first.counts
    assert 0 < second.resumed.read < 900
    with psycopg.connect(postgres.dsn) as conn:
        rows = conn.execute(f"SELECT source_offset, score, decision, record FROM {table}").fetchall()
    assert len(rows) == len({offset for offset, *_ in rows}) == first.counts.scored
    assert all(record["score"] == score and record["decision"] == decision for _, score, decision, record in rows)
    _, rejects = read_output(tmp_path / "out")
    seen = collections.Counter([offset for offset, *_ in rows] + [o for _, _, o in positions(rejects)])
    assert seen == collections.Counter(range(900)), "each input once, as a row or a reject"
