"""PostgreSQL as a destination: score records upserted into a table, in batches, with psycopg 3.

``write`` only queues; ``poll`` and ``flush`` write what is queued in one transaction (COPY into a
temporary table, then ``INSERT ... ON CONFLICT DO NOTHING``), and acknowledge each record only
after that transaction committed, so an input offset is never committed ahead of its row. Rows are
keyed by their source position (topic, partition, offset; for a batch input: its id, part, row),
so a record written again after a crash or a retried commit changes nothing. A lost connection is
retried with backoff without blocking the stream loop; past ``max_outage_s`` the records fail.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import sql
from pydantic import ValidationError

from streamscore.config import DestinationSettings, Settings, describe_validation_error
from streamscore.config.postgres import PostgresSettings
from streamscore.core.records import ScoredBatch
from streamscore.engines.base import DeliveryCallback, Engine
from streamscore.errors import ConfigError, DeliveryError

log = logging.getLogger(__name__)

COLUMNS = ("source_topic", "source_partition", "source_offset", "key", "score", "decision", "model",
           "model_version", "models", "event_time_ms", "scored_at_ms", "record")
"""The staging table's columns, in COPY order."""

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
    source_topic     text             NOT NULL,
    source_partition integer          NOT NULL,
    source_offset    bigint           NOT NULL,
    key              bytea,
    score            double precision NOT NULL,
    decision         text             NOT NULL,
    model            text             NOT NULL,
    model_version    text             NOT NULL,
    models           jsonb,
    event_time       timestamptz,
    scored_at        timestamptz      NOT NULL,
    record           jsonb            NOT NULL,
    PRIMARY KEY (source_topic, source_partition, source_offset)
)"""

CREATE_STAGING = """
CREATE TEMPORARY TABLE IF NOT EXISTS streamscore_staging (
    source_topic text, source_partition integer, source_offset bigint, key bytea,
    score double precision, decision text, model text, model_version text, models jsonb,
    event_time_ms bigint, scored_at_ms bigint, record jsonb
) ON COMMIT DELETE ROWS"""

UPSERT = """
INSERT INTO {table} (source_topic, source_partition, source_offset, key, score, decision, model,
                     model_version, models, event_time, scored_at, record)
SELECT source_topic, source_partition, source_offset, key, score, decision, model, model_version, models,
       to_timestamp(event_time_ms / 1000.0), to_timestamp(scored_at_ms / 1000.0), record
FROM streamscore_staging
ON CONFLICT (source_topic, source_partition, source_offset) DO NOTHING"""


@dataclass(slots=True)
class _Pending:
    rows: list[tuple[Any, ...]]
    on_delivery: DeliveryCallback


def row_of(key: bytes | None, output: bytes) -> tuple[Any, ...]:
    """The staging row of one score record (the rendered JSON the Kafka destination writes)."""
    record = orjson.loads(output)
    source = record["source"]
    models = record.get("models")
    return (source["topic"], source["partition"], source["offset"], key, record["score"], record["decision"],
            record["model"], record["model_version"], None if models is None else orjson.dumps(models).decode(),
            record.get("event_time_ms"), record["scored_at_ms"], output.decode())


class PostgresTable:
    """Score records upserted into one table; see the module docstring for the protocol."""

    transactional = False

    def __init__(self, options: PostgresSettings, key: str = "destinations[].options") -> None:
        self.options = options
        self.key = key
        """The settings path of the options, for errors."""
        self.name = f"postgresql:{options.table}"
        self._table = sql.Identifier(*options.table.split("."))
        self._conn: psycopg.Connection[Any] | None = None
        self._pending: list[_Pending] = []
        self._retry_at = 0.0
        self._backoff = options.initial_backoff_s
        self._failing_since: float | None = None
        self.written = 0
        """Rows this instance inserted (a row already present counts nothing)."""

    def start(self) -> None:
        """Connect and create the table if missing; an unreachable server is a DeliveryError at start."""
        try:
            self._connect()
        except psycopg.Error as exc:
            raise DeliveryError(f"{self.key}.dsn: cannot connect and create table {self.options.table}: "
                                f"{_first_line(exc)}") from None

    def write(self, keys: Sequence[bytes | None], batch: ScoredBatch, on_delivery: DeliveryCallback) -> None:
        if batch.outputs:
            self._pending.append(_Pending([row_of(k, o) for k, o in zip(keys, batch.outputs, strict=True)],
                                          on_delivery))

    def poll(self, timeout: float) -> None:
        """Write what is queued, unless a retry is waiting out its backoff: then wait for it, at most
        ``timeout`` seconds (the stream loop goes on polling Kafka in between)."""
        if not self._pending:
            return
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, timeout))
            if wait > timeout:
                return
        self._write_pending()

    def flush(self, timeout: float) -> int:
        until = time.monotonic() + timeout
        while self._pending:
            wait = self._retry_at - time.monotonic()
            if wait > until - time.monotonic():
                break
            if wait > 0:
                time.sleep(wait)
            self._write_pending()
        return sum(len(p.rows) for p in self._pending)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- writing --------------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self.options.dsn.get_secret_value(), autocommit=True,
                                   connect_timeout=max(1, round(self.options.connect_timeout_s)))
            try:
                conn.execute(sql.SQL(CREATE_TABLE).format(table=self._table))
                conn.execute(CREATE_STAGING)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _write_pending(self) -> None:
        """One transaction for the leading queued writes (up to ``max_rows``); acknowledge them once it
        committed. A failure keeps them queued for a retry after the backoff."""
        take, rows, limit = 0, 0, self.options.max_rows
        while take < len(self._pending) and (take == 0 or rows + len(self._pending[take].rows) <= limit):
            rows += len(self._pending[take].rows)
            take += 1
        writes = self._pending[:take]
        try:
            conn = self._connect()
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(sql.SQL("COPY streamscore_staging ({}) FROM STDIN").format(
                        sql.SQL(", ").join(map(sql.Identifier, COLUMNS)))) as copy:
                    for write in writes:
                        for row in write.rows:
                            copy.write_row(row)
                cur.execute(sql.SQL(UPSERT).format(table=self._table))
                inserted = cur.rowcount
        except psycopg.OperationalError as exc:
            self._retry_later(exc)
            return
        except psycopg.Error as exc:  # the data or the table is wrong: retrying will not help
            self._fail(f"{self.name}: {_first_line(exc)}")
            return
        del self._pending[:take]
        self.written += max(0, inserted)
        self._recovered()
        for write in writes:
            for _ in write.rows:
                write.on_delivery(None)

    def _retry_later(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if now - self._failing_since > self.options.max_outage_s:
            self._fail(f"{self.name}: unreachable for over {self.options.max_outage_s:g}s: {_first_line(exc)}")
            return
        log.warning("%s: write failed (%s); retrying in %.1fs", self.name, _first_line(exc), self._backoff)
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2, self.options.max_backoff_s)

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.info("%s: writing again after %.1fs", self.name, time.monotonic() - self._failing_since)
        self._failing_since = None
        self._backoff = self.options.initial_backoff_s
        self._retry_at = 0.0

    def _fail(self, message: str) -> None:
        """Fail every queued record: nothing past them is committed, and the service stops."""
        error = DeliveryError(message)
        pending, self._pending = self._pending, []
        for write in pending:
            for _ in write.rows:
                write.on_delivery(error)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def postgres_table(destination: DestinationSettings, settings: Settings, engine: Engine | None) -> PostgresTable:
    """The ``postgresql`` destination kind: ``options`` as in ``PostgresSettings``."""
    index = settings.outputs.index(destination) if destination in settings.outputs else 0
    if destination.topic is not None:
        raise ConfigError(f"destinations[{index}].topic: a postgresql destination takes no topic")
    try:
        options = PostgresSettings.model_validate(destination.options)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        message = (f"{first['loc'][0]}: unknown key (expected one of: {', '.join(PostgresSettings.model_fields)})"
                   if first["type"] == "extra_forbidden" else describe_validation_error(exc))
        raise ConfigError(f"destinations[{index}].options.{message}") from None
    return PostgresTable(options, f"destinations[{index}].options")
