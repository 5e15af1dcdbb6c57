"""Reference data sets as events: JSON Lines, CSV or Parquet, read into the dicts the service decodes.

CSV and Parquet columns named by dotted paths (``card.present``) become nested objects, and CSV
text is converted to each feature's type (an empty cell is an absent field), so a reference table
goes through the same feature extraction as the live stream.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from streamscore.config import FeatureSettings
from streamscore.errors import ConfigError

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet",
           ".pq": "parquet"}


def read_events(path: Path, specs: Sequence[FeatureSettings], limit: int | None = None) -> list[dict[str, Any]]:
    """The data set's rows as events (at most ``limit``); the format follows the file's suffix."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(f"--data: {path.name}: expected a .jsonl, .csv or .parquet file")
    try:
        if kind == "jsonl":
            return _jsonl(path, limit)
        if kind == "csv":
            return _csv(path, specs, limit)
        return _parquet(path, limit)
    except OSError as exc:
        raise ConfigError(f"--data: cannot read {path} ({exc.strerror or exc})") from None


def _jsonl(path: Path, limit: int | None) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if limit is not None and len(events) >= limit:
                break
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise ConfigError(f"--data: {path.name} line {number} is not JSON") from None
            if isinstance(event, dict):
                events.append(event)
    return events


def _csv(path: Path, specs: Sequence[FeatureSettings], limit: int | None) -> list[dict[str, Any]]:
    types = {spec.field_path: spec.dtype for spec in specs}
    events: list[dict[str, Any]] = []
    with path.open(newline="") as rows:
        for row in csv.DictReader(rows):
            if limit is not None and len(events) >= limit:
                break
            flat = {k: _typed(v, types.get(k)) for k, v in row.items() if v not in ("", None)}
            events.append(_nest(flat))
    return events


def _typed(text: str, dtype: str | None) -> Any:
    """A CSV cell as the JSON value of its feature's type (left as text when it does not parse)."""
    try:
        if dtype == "float":
            return float(text)
        if dtype == "int":
            return int(float(text))
    except ValueError:
        return text
    if dtype == "bool":
        return {"true": True, "1": True, "false": False, "0": False}.get(text.strip().lower(), text)
    return text


def _parquet(path: Path, limit: int | None) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("--data: reading Parquet needs pyarrow (pip install 'streamscore[monitor]')") from None
    table = pq.read_table(path)
    if limit is not None:
        table = table.slice(0, limit)
    return [_nest({k: v for k, v in row.items() if v is not None}) for row in table.to_pylist()]


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"card.present": True}`` -> ``{"card": {"present": True}}``."""
    event: dict[str, Any] = {}
    for key, value in flat.items():
        node = event
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return event
