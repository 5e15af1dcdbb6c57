"""Settings of the Faust engine (``engine: faust``): where its tables keep their state."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from streamscore.config.section import Section


class FaustSettings(Section):
    store: Literal["auto", "rocksdb", "memory"] = "auto"
    """Where the tables of stateful features live between changelog writes: ``rocksdb`` (through
    rocksdict: local files under ``data_dir``, recovered from the changelog only past what they
    hold), ``memory`` (rebuilt from the changelog topics at every start), ``auto``: rocksdb when
    rocksdict is installed."""
    data_dir: str = "streamscore-faust"
    """The Faust application's data directory (RocksDB tables), relative to the working directory."""
    history_grace_s: float = Field(default=3600.0, ge=0)
    """A stateful feature keeps each key's events this long past its longest window (event time), so
    that the events a crash makes the service consume again are recomputed exactly as before."""
    topic_replication: int = Field(default=1, ge=1)
    """Replication factor of the changelog topics Faust creates for the tables."""
