"""Input files for ``streamscore batch``: JSON Lines, CSV and Parquet, local or (with fsspec) remote,
turned into the same JSON event bytes the stream scores, chunk by chunk.

A JSON Lines line is scored as it is (a malformed line is rejected exactly as a malformed Kafka
event would be). CSV and Parquet are read in Arrow record batches; each row becomes a JSON object
(a CSV column named ``card.present`` becomes ``{"card": {"present": ...}}``, so dotted feature
paths read CSV and nested Parquet alike).
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any, cast

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from streamscore.errors import ConfigError

EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet",
              ".pq": "parquet"}

Chunk = tuple[int, Callable[[], list[bytes]]]
"""(chunk number, a call that returns its rows as JSON event bytes): skipped chunks are never built."""


def _remote(path: str) -> bool:
    return "://" in path


def expand(patterns: list[str]) -> list[str]:
    """Every file the paths and globs name, sorted and without repeats; ConfigError when one names none."""
    found: list[str] = []
    for pattern in patterns:
        if _remote(pattern):
            fs, _, paths = _fsspec().get_fs_token_paths(pattern)
            matches = sorted(fs.unstrip_protocol(p) for p in paths)
        else:
            matches = sorted(str(Path(p).resolve()) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not matches:
            raise ConfigError(f"batch.input.files: {pattern!r} names no file")
        found.extend(m for m in matches if m not in found)
    return found


def format_of(path: str, configured: str) -> str:
    if configured != "auto":
        return configured
    name = path.removesuffix(".gz")
    fmt = EXTENSIONS.get(Path(name).suffix.lower())
    if fmt is None:
        raise ConfigError(f"batch.input.format: cannot tell the format of {path!r} from its extension "
                          f"(expected one of {', '.join(sorted(EXTENSIONS))}, or set the format)")
    return fmt


def _fsspec() -> Any:
    try:
        import fsspec
    except ImportError:
        raise ConfigError("batch.input.files: a URL needs the fsspec extra "
                          "(pip install 'streamscore[fsspec]')") from None
    return fsspec


def _open(path: str) -> AbstractContextManager[IO[bytes]]:
    if _remote(path):
        return cast("AbstractContextManager[IO[bytes]]", _fsspec().open(path, "rb", compression="infer"))
    if path.endswith(".gz"):
        import gzip
        return cast("AbstractContextManager[IO[bytes]]", gzip.open(path, "rb"))
    return open(path, "rb")  # the caller's with-block closes it


def count_rows(path: str, fmt: str) -> int | None:
    """Rows in the file, for the progress bar: Parquet's metadata, or the lines of a text file."""
    if _remote(path):
        return None
    if fmt == "parquet":
        return int(pq.ParquetFile(path).metadata.num_rows)
    lines = 0
    with _open(path) as f:
        while block := f.read(1 << 20):
            lines += block.count(b"\n")
    return max(0, lines - 1) if fmt == "csv" else lines


def chunks(path: str, fmt: str, chunk_rows: int) -> Iterator[Chunk]:
    """The file's rows in chunks of ``chunk_rows`` (the last one may be shorter)."""
    if fmt == "jsonl":
        return _jsonl_chunks(path, chunk_rows)
    return _arrow_chunks(path, fmt, chunk_rows)


def _jsonl_chunks(path: str, chunk_rows: int) -> Iterator[Chunk]:
    with _open(path) as f:
        lines: list[bytes] = []
        number = 0
        for line in f:
            lines.append(line.rstrip(b"\r\n"))
            if len(lines) == chunk_rows:
                yield number, lines.copy
                lines, number = [], number + 1
        if lines:
            yield number, lines.copy


def _batches(path: str, fmt: str) -> Iterator[pa.RecordBatch]:
    with _open(path) as f:
        if fmt == "parquet":
            yield from pq.ParquetFile(f).iter_batches(batch_size=65_536)
        elif fmt == "csv":
            yield from pacsv.open_csv(f)
        else:
            raise ConfigError(f"batch.input.format: unknown format {fmt!r}")


def _arrow_chunks(path: str, fmt: str, chunk_rows: int) -> Iterator[Chunk]:
    held: list[pa.RecordBatch] = []
    rows, number = 0, 0
    for batch in _batches(path, fmt):
        held.append(batch)
        rows += batch.num_rows
        while rows >= chunk_rows:
            table = pa.Table.from_batches(held)
            yield number, events_of(table.slice(0, chunk_rows))
            rest = table.slice(chunk_rows)
            held, rows, number = rest.to_batches(), rest.num_rows, number + 1
    if rows:
        yield number, events_of(pa.Table.from_batches(held))


TO_PYTHON_ROWS = 4096
"""Rows turned into Python objects at a time: the dicts of a whole chunk are never held at once."""


def events_of(table: pa.Table) -> Callable[[], list[bytes]]:
    def build() -> list[bytes]:
        nest = any("." in name for name in table.column_names)
        dumps = orjson.dumps
        out: list[bytes] = []
        for start in range(0, table.num_rows, TO_PYTHON_ROWS):
            rows = table.slice(start, TO_PYTHON_ROWS).to_pylist()
            out.extend(dumps(_nested(row) if nest else row, default=str) for row in rows)
        return out
    return build


def _nested(row: dict[str, Any]) -> dict[str, Any]:
    """``{"card.present": true}`` -> ``{"card": {"present": true}}``."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        node = out
        *parents, leaf = name.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = value
    return out
