"""The ``options`` of a ``postgresql`` destination (``destinations: [{kind: postgresql, options: ...}]``)."""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, field_validator

from streamscore.config.section import Section

_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


class PostgresSettings(Section):
    dsn: SecretStr
    """libpq connection string or URI (``postgresql://scorer@db:5432/scores``). Keep the password out
    of it: libpq reads ``PGPASSWORD`` or ``PGPASSFILE`` from the environment."""
    table: str = "streamscore_scores"
    """Table the scores go to, ``name`` or ``schema.name``; created if missing (schema in the README)."""
    max_rows: int = Field(default=5000, ge=1)
    """Score records written per database transaction, at most (a transaction holds whole batches)."""
    connect_timeout_s: float = Field(default=5.0, gt=0)
    """How long one connection attempt may take."""
    initial_backoff_s: float = Field(default=0.2, gt=0)
    """After a lost connection or a failed transaction, wait this long before retrying; it doubles
    after each failed retry..."""
    max_backoff_s: float = Field(default=5.0, gt=0)
    """...up to this."""
    max_outage_s: float = Field(default=120.0, gt=0)
    """How long the database may stay unreachable before the writes fail for good (the service then
    exits non-zero, committing nothing past them)."""

    @field_validator("table")
    @classmethod
    def _identifier(cls, table: str) -> str:
        if not _TABLE.match(table):
            raise ValueError("expected a table name, or schema.name, of letters, digits and _")
        return table
