"""Input files of synthetic card transactions for ``streamscore batch`` (the tests and ``load.batch``):
JSON Lines with the generator's malformed events in them, Parquet with nested columns, CSV with
dotted column names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from streamscore.demo.transactions import TransactionGenerator


def events(n: int, seed: int = 0, malformed_rate: float = 0.0) -> list[bytes]:
    """``n`` encoded transactions (values only)."""
    return [value for _, value in TransactionGenerator(seed=seed, malformed_rate=malformed_rate).encoded(n)]


def flat(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in row.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def write(path: Path, values: list[bytes], null_every: int | None = None) -> Path:
    """The values as the file ``path``'s extension says: JSON Lines as they are; Parquet and CSV take
    the JSON objects of consistent types only (malformed events are for JSON Lines) and write the
    others' JSON, every ``null_every``-th row (if given) with a null ``amount`` (rejected: missing_field)."""
    if path.suffix == ".jsonl":
        # one event per line: the generator's binary garbage loses its newline bytes (still not JSON)
        path.write_bytes(b"".join(v.replace(b"\n", b" ") + b"\n" for v in values))
        return path
    rows = [orjson.loads(v) for v in values]
    for row in rows[null_every - 1::null_every] if null_every else []:
        row["amount"] = None
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".csv":
        pacsv.write_csv(pa.Table.from_pylist([flat(r) for r in rows]), path)
    else:
        raise ValueError(f"unknown extension {path.suffix}")
    return path
