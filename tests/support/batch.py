"""Test support for ``streamscore batch``: a config with a ``batch`` section, and its output read back."""

from __future__ import annotations

import uuid
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

import orjson
import pyarrow.dataset as ds
import yaml


def batch_config(workdir: Path, batch: dict[str, Any], **sections: Any) -> Path:
    """The demo config (CPU) with ``batch`` and any other ``sections`` replaced."""
    with as_file(files("streamscore.demo") / "config.yaml") as demo:
        config = yaml.safe_load(Path(demo).read_text())
        config["model"]["path"] = str(Path(demo).parent / "fraud_model.onnx")
    config["model"]["provider"] = "cpu"
    config["batch"] = batch
    config.update(sections)
    path = workdir / f"batch-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def read_output(folder: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(score records, rejects) of a batch output folder, Parquet or JSON Lines."""
    scores_dir = folder / "scores"
    if any(scores_dir.glob("*.parquet")):
        scores = ds.dataset(scores_dir, format="parquet").to_table().to_pylist()
    else:
        scores = [orjson.loads(line) for f in sorted(scores_dir.glob("*.jsonl"))
                  for line in f.read_bytes().splitlines()]
    rejects = [orjson.loads(line) for f in sorted((folder / "rejects").glob("*.jsonl"))
               for line in f.read_bytes().splitlines()]
    return scores, rejects


def positions(records: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """The source (topic or file, partition, offset or row) of each record."""
    return [(r["source"]["topic"], r["source"]["partition"], r["source"]["offset"]) for r in records]
