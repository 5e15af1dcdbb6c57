"""The stream into a real PostgreSQL table: kill -9 and a lost connection leave every input exactly once."""

from __future__ import annotations

import collections
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from load.faults.harness import InputStream
from tests.support import OutputReader, ServiceProcess, Topics, wait_for
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.integration


def table_keys(dsn: str, table: str) -> list[bytes]:
    """The key of every row (a table not created yet has none)."""
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
            return []
        return [bytes(k) for (k,) in conn.execute(f"SELECT key FROM {table}")]


def rows_at_least(dsn: str, table: str, n: int) -> Callable[[], bool]:
    return lambda: len(table_keys(dsn, table)) >= n


def postgres_config(write_config: Callable[..., Path], t: Topics, dsn: str, table: str) -> Path:
    return write_config(t, destinations=[{"kind": "postgresql", "options": {
        "dsn": dsn, "table": table, "initial_backoff_s": 0.1, "max_backoff_s": 1.0}}])


def wait_all_answered(reader: OutputReader, dsn: str, table: str, ids: frozenset[bytes],
                      proc: ServiceProcess) -> list[bytes]:
    """Wait until every input is a row or a dead letter; returns the rows' keys."""
    rows: list[bytes] = []

    def answered() -> bool:
        nonlocal rows
        assert proc.alive(), f"the service exited:\n{proc.log_tail(60)}"
        rows = table_keys(dsn, table)
        turns = iter((False, True))
        reader.read_until(lambda _: next(turns), 5, "one poll of the dead letters")
        return set(rows) | {r.key for r in reader.records} >= ids
    wait_for(answered, 120, "every input in the table or the dead-letter topic", interval=0.3)
    return rows


def assert_exactly_once(rows: list[bytes], reader: OutputReader, ids: frozenset[bytes]) -> None:
    dead = {r.key for r in reader.records}
    counts = collections.Counter(rows)
    assert {k for k, n in counts.items() if n > 1} == set(), "a row written twice"
    assert set(rows) | dead == ids, "an input lost"
    assert set(rows) & dead == set(), "an input both scored and dead-lettered"
    assert len(rows) > len(ids) // 2, "most inputs are valid and scored"


def stream_to_table(postgres: PostgresServer, topics: Callable[..., Topics], write_config: Callable[..., Path],
                    bootstrap: str, seed: int) -> tuple[Topics, str, Path, InputStream]:
    """Fresh topics, a fresh table and its configuration, and 2,000 inputs streaming in at 1,000/s."""
    t = topics(2)
    table = f"scores_{uuid.uuid4().hex[:8]}"
    config = postgres_config(write_config, t, postgres.dsn, table)
    return t, table, config, InputStream(bootstrap, t.source, 2000, rate=1000, seed=seed).start()


def test_kill9_restarts_leave_each_input_once_in_the_table(
        postgres: PostgresServer, topics: Callable[..., Topics], write_config: Callable[..., Path],
        service: Callable[..., ServiceProcess], output_reader: Callable[..., OutputReader],
        bootstrap: str) -> None:
    t, table, config, inputs = stream_to_table(postgres, topics, write_config, bootstrap, seed=7)
    for at_least in (200, 800):
        proc = service(config)
        wait_for(rows_at_least(postgres.dsn, table, at_least), 90, f"{at_least} rows")
        proc.kill()  # SIGKILL: rows written, offsets not yet committed, are written again after the restart
    inputs.join()
    proc = service(config)
    reader = output_reader(t)
    rows = wait_all_answered(reader, postgres.dsn, table, inputs.ids, proc)
    assert_exactly_once(rows, reader, inputs.ids)


def test_a_lost_connection_is_retried_without_loss(
        postgres: PostgresServer, topics: Callable[..., Topics], write_config: Callable[..., Path],
        service: Callable[..., ServiceProcess], output_reader: Callable[..., OutputReader],
        bootstrap: str) -> None:
    t, table, config, inputs = stream_to_table(postgres, topics, write_config, bootstrap, seed=8)
    proc = service(config)
    wait_for(rows_at_least(postgres.dsn, table, 200), 90, "200 rows")
    postgres.restart()  # the server closes every connection; the service keeps consuming meanwhile
    # Events produced after the restart must be written through a connection the restart closed,
    # whether or not the first stream was all written before it.
    after = InputStream(bootstrap, t.source, 500, seed=9).start()
    inputs.join()
    after.join()
    ids = inputs.ids | after.ids
    reader = output_reader(t)
    rows = wait_all_answered(reader, postgres.dsn, table, ids, proc)
    assert_exactly_once(rows, reader, ids)
    assert "write failed" in proc.log(), "the connection loss was seen and retried"
