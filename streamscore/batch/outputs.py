"""Where a batch run's chunks go: part files in a folder, or the configured destinations.

Either way a chunk counts as done only once all of its outputs are written: a folder's part files
are renamed into place whole (a redone chunk overwrites its own files, so each input is in the
folder once); a destination acknowledges each record, as in the stream.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import orjson
import pyarrow.json as pajson
import pyarrow.parquet as pq

from streamscore.batch.parts import write_atomically
from streamscore.core.records import DeadLetter, ScoredBatch
from streamscore.delivery.tracker import Ticket
from streamscore.destinations.base import Outputs
from streamscore.engines.base import DeliveryCallback
from streamscore.errors import DeliveryError

READ_BLOCK_BYTES = 64 << 20
"""Arrow's JSON reader infers the schema of a chunk from its first block: a chunk in one block gets one schema."""
FLUSH_TIMEOUT = 300.0
"""How long a chunk's outputs may take to be acknowledged by the destinations."""


class ChunkSink(Protocol):
    def write(self, part: int, chunk: int, keys: Sequence[bytes | None], scored: ScoredBatch,
              letters: Sequence[DeadLetter]) -> None:
        """Write one chunk's score records and dead letters; returns once they are all stored."""

    def close(self) -> None: ...


def reject_line(letter: DeadLetter) -> bytes:
    """A dead letter as one JSON object: the reason, the detail and the source its headers carry,
    the time, and the value as text (cut to its first KiB when oversize, as in the stream)."""
    h = {name: (v or b"").decode(errors="replace") for name, v in letter.headers}
    fields: dict[str, object] = {
        "reason": h["streamscore.reason"], "detail": h["streamscore.detail"],
        "source": {"topic": h["streamscore.source.topic"], "partition": int(h["streamscore.source.partition"]),
                   "offset": int(h["streamscore.source.offset"])},
        "rejected_at_ms": int(h["streamscore.time"]),
        "value": None if letter.value is None else letter.value.decode(errors="replace"),
    }
    if "streamscore.value.truncated.from" in h:
        fields["value_truncated_from"] = int(h["streamscore.value.truncated.from"])
    return orjson.dumps(fields)


def write_rejects(folder: Path, part: int, chunk: int, letters: Sequence[DeadLetter]) -> None:
    """``folder/part-PPPPP-CCCCCC.jsonl``, one line per rejected row (none: no file)."""
    if letters:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(folder / f"part-{part:05d}-{chunk:06d}.jsonl",
                         b"".join(reject_line(d) + b"\n" for d in letters))


class FolderSink:
    """``scores/part-PPPPP-CCCCCC.{parquet,jsonl}`` and ``rejects/part-PPPPP-CCCCCC.jsonl`` under ``folder``."""

    def __init__(self, folder: Path, fmt: str, rejects: Path | None = None) -> None:
        self.scores = folder / "scores"
        self.rejects = rejects or folder / "rejects"
        self.format = fmt
        self.scores.mkdir(parents=True, exist_ok=True)

    def write(self, part: int, chunk: int, keys: Sequence[bytes | None], scored: ScoredBatch,
              letters: Sequence[DeadLetter]) -> None:
        name = f"part-{part:05d}-{chunk:06d}"
        write_rejects(self.rejects, part, chunk, letters)
        if not scored.outputs:
            return
        if self.format == "jsonl":
            write_atomically(self.scores / f"{name}.jsonl", b"".join(o + b"\n" for o in scored.outputs))
            return
        # Arrow's own JSON reader parses the records the stream would write (much faster than dicts)
        table = pajson.read_json(io.BytesIO(b"\n".join(scored.outputs)),
                                 read_options=pajson.ReadOptions(block_size=READ_BLOCK_BYTES))
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        write_atomically(self.scores / f"{name}.parquet", buffer.getvalue())

    def close(self) -> None:
        """Every write is complete when it returns."""


class NoDeadLetters:
    """The dead-letter sink when rejects go to a folder: nothing is ever sent to it."""

    def write_dead_letters(self, letters: Sequence[DeadLetter], on_delivery: DeliveryCallback) -> None:
        raise RuntimeError("rejected rows go to the rejects folder")

    def poll(self, timeout: float) -> None:
        """Nothing to serve."""

    def flush(self, timeout: float) -> int:
        return 0


class DestinationSink:
    """The configured destinations and the dead-letter topic (or a ``rejects`` folder), as in the
    stream: a chunk is stored when every record of it was acknowledged."""

    def __init__(self, outputs: Outputs, rejects: Path | None = None) -> None:
        self.outputs = outputs
        self.rejects = rejects

    def write(self, part: int, chunk: int, keys: Sequence[bytes | None], scored: ScoredBatch,
              letters: Sequence[DeadLetter]) -> None:
        if self.rejects is not None:
            write_rejects(self.rejects, part, chunk, letters)
            letters = []
        ticket = Ticket(len(scored.outputs) * len(self.outputs.destinations) + len(letters))
        self.outputs.write(keys, scored, letters, ticket.ack)
        until = time.monotonic() + FLUSH_TIMEOUT
        while ticket.pending > 0 and ticket.error is None and time.monotonic() < until:
            self.outputs.flush(min(1.0, until - time.monotonic()))
        if ticket.error is not None:
            raise DeliveryError(f"part {part} chunk {chunk}: {ticket.error}")
        if ticket.pending > 0:
            raise DeliveryError(f"part {part} chunk {chunk}: {ticket.pending} records not acknowledged "
                                f"within {FLUSH_TIMEOUT:g}s")

    def close(self) -> None:
        self.outputs.close()
