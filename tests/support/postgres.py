"""The test PostgreSQL server: defined in ``load.postgres`` so that the benchmarks share it (``load``
may not import from ``tests``)."""

from __future__ import annotations

from load.postgres import PostgresServer, binaries

__all__ = ["PostgresServer", "binaries"]
