"""The plan of a batch run and what of it is done, kept in the state folder so a killed run that is
started again with the same arguments skips the chunks already written.

``plan.json`` fixes the inputs when the run first starts (the files a glob matched, each partition's
offset range, the end of a topic included) and names the run (``run``: a random id, from which an
exactly-once run derives its progress group and transactional ids, so a state folder made again
never resumes from an older run's offsets); ``done/<part>-<chunk>`` marks a chunk whose outputs are
all written, holding its counts. Both are written to a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from streamscore.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Part:
    """One file, or one partition's offset range ``[first, end)``."""

    source: str
    """The file's path or URL, or the topic."""
    partition: int
    format: str
    """``jsonl``, ``csv``, ``parquet`` or ``kafka``."""
    first: int = 0
    end: int | None = None
    rows: int | None = None
    """How many rows it holds, when known (for the progress bar)."""


@dataclass(frozen=True, slots=True)
class Counts:
    read: int = 0
    scored: int = 0
    rejected: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.read + other.read, self.scored + other.scored, self.rejected + other.rejected)


def write_atomically(path: Path, data: bytes) -> None:
    """``data`` at ``path`` whole or not at all: a temporary file (hidden: dataset readers skip names
    starting with a dot), flushed to disk, renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class State:
    """The plan and the done chunks under one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._done = folder / "done"
        self.run_id = ""
        """The run's id, once ``load_or_save`` has read or made the plan."""

    def load_or_save(self, identity: dict[str, Any], make: Any) -> list[Part]:
        """The saved plan when the run is resumed (``identity`` must match), else ``make()``'s, saved."""
        path = self.folder / "plan.json"
        if path.exists():
            saved = orjson.loads(path.read_bytes())
            if saved["identity"] != identity:
                raise ConfigError(f"batch: {self.folder} holds the state of another run (its input, chunk_rows, "
                                  f"delivery or, under exactly-once, workers differ); give another output or "
                                  f"state folder, or remove it")
            # a plan saved before runs had ids: one from the folder and the identity, stable across restarts
            self.run_id = saved.get("run") or hashlib.sha256(str(self.folder.resolve()).encode()
                                                             + orjson.dumps(identity)).hexdigest()[:12]
            return [Part(**p) for p in saved["parts"]]
        parts: list[Part] = make()
        self.run_id = uuid.uuid4().hex[:12]
        self._done.mkdir(parents=True, exist_ok=True)
        write_atomically(path, orjson.dumps({"identity": identity, "run": self.run_id,
                                             "parts": [asdict(p) for p in parts]}, option=orjson.OPT_INDENT_2))
        return parts

    def done(self) -> dict[tuple[int, int], Counts]:
        """(part, chunk) -> its counts, for every chunk already written."""
        found: dict[tuple[int, int], Counts] = {}
        for marker in self._done.glob("[0-9]*-[0-9]*"):
            part, chunk = marker.name.split("-")
            found[int(part), int(chunk)] = Counts(**orjson.loads(marker.read_bytes()))
        return found

    def mark_done(self, part: int, chunk: int, counts: Counts) -> None:
        write_atomically(self._done / f"{part:05d}-{chunk:06d}", orjson.dumps(asdict(counts)))
