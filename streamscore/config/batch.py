"""The ``batch`` section: what ``streamscore batch`` reads (files, or a Kafka topic range) and writes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from streamscore.config.section import Section


class TopicRangeSettings(Section):
    """Every partition of the topics from a start to an end, read with assign() (no consumer group
    is joined and the live service's group is left alone; nothing is committed, except under
    ``delivery: exactly_once``, to a progress group of the run's own, ``<group_id>-batch-<run>``)."""

    topics: list[str] = []
    """Topics to read (default: ``kafka.source_topics``)."""
    start_offset: int | None = Field(default=None, ge=0)
    """Start each partition at this offset (or its first one, if later)..."""
    start_timestamp_ms: int | None = Field(default=None, ge=0)
    """...or at its first event at or after this time (ms since the epoch); neither: the beginning."""
    end_offset: int | None = Field(default=None, ge=0)
    """End each partition before this offset (or at its end, if sooner)..."""
    end_timestamp_ms: int | None = Field(default=None, ge=0)
    """...or before its first event at or after this time; neither: its end when the run first started
    (kept in the run's plan, so a resumed run ends at the same offsets)."""

    @model_validator(mode="after")
    def _one_each(self) -> TopicRangeSettings:
        if self.start_offset is not None and self.start_timestamp_ms is not None:
            raise ValueError("give start_offset or start_timestamp_ms, not both")
        if self.end_offset is not None and self.end_timestamp_ms is not None:
            raise ValueError("give end_offset or end_timestamp_ms, not both")
        return self


class BatchInputSettings(Section):
    files: list[str] = []
    """Paths or globs of input files (``s3://...`` and other fsspec URLs with the ``fsspec`` extra)."""
    format: Literal["auto", "jsonl", "csv", "parquet"] = "auto"
    """File format; ``auto`` goes by the extension (``.jsonl``/``.json``/``.ndjson``, ``.csv``, ``.parquet``)."""
    kafka: TopicRangeSettings | None = None
    """A topic range instead of files."""

    @model_validator(mode="after")
    def _one_kind(self) -> BatchInputSettings:
        if bool(self.files) == (self.kafka is not None):
            raise ValueError("give either 'files' or 'kafka'")
        return self


class BatchSettings(Section):
    input: BatchInputSettings
    """What to score."""
    output: str | None = None
    """Output folder: score part files under ``scores/``, rejected rows under ``rejects/`` (JSON Lines,
    each with its ``streamscore.reason``) and the run's progress under ``_streamscore/``. None: the
    configured ``destinations`` (a Kafka topic, a PostgreSQL table) and the dead-letter topic."""
    rejects: str | None = None
    """Folder for the rows that cannot be scored (JSON Lines, each with its ``reason``). Default:
    ``<output>/rejects``, or with ``destinations`` the dead-letter topic. With ``destinations`` and no
    ``kafka`` destination, a ``rejects`` folder means no Kafka broker is needed at all."""
    format: Literal["parquet", "jsonl"] = "parquet"
    """Format of the score part files: Parquet, or JSON Lines holding the stream's score records."""
    state: str | None = None
    """Where the run's plan and completed parts are kept (default: ``<output>/_streamscore``; required
    when writing to ``destinations``)."""
    chunk_rows: int = Field(default=50_000, ge=1)
    """Rows per part: the unit that is written atomically and that a resumed run skips when done (under
    ``delivery: exactly_once`` into Kafka, one transaction each: keep it in the thousands)."""
    batch_rows: int = Field(default=5_000, ge=1)
    """Rows per call of the scoring core (the model's batch)."""
    workers: int = Field(default=1, ge=1)
    """Processes that score at once on this machine, each with its own share of the plan's files or
    topic partitions (part ``i`` goes to worker ``i mod workers``); resuming works as with one."""

    @model_validator(mode="after")
    def _somewhere(self) -> BatchSettings:
        if self.output is None and self.state is None:
            raise ValueError("give 'output' (a folder), or 'state' to write to the destinations")
        return self
